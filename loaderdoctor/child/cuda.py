"""The accelerator seam of the child: timing the real GPU run without changing it.

No `torch.cuda.synchronize()` on the per-step path: it would serialise data loading with the
GPU's queued work and remove the overlap that asynchronous kernels give, so the measured run
would not be the user's. Instead two CUDA events are recorded on the current stream at each
batch boundary, one when the loop asks for the next batch and one when the batch is handed
over, and read lazily a few steps later with `event.query()` (never a wait). The GPU time
between the two is the GPU-idle gap at that boundary: zero while the GPU still had queued
work to run as the host waited for data, the whole wait when the GPU had run dry. That gap
is the stall that costs money.

`GpuGaps(cuda)` takes the `torch.cuda` module (or a fake with the same few names: Event,
is_available, is_initialized, current_stream) so the logic is tested without a GPU.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from loaderdoctor.child.h2d import CopyWatch

MAX_PENDING = 64  # boundaries waiting for their events; older ones are dropped (said in the count)


class GpuGaps:
    """Per batch boundary: record an event on entry and on return; later, the GPU's idle gap."""

    def __init__(self, cuda: Any):
        self.cuda = cuda
        self.pending: deque = deque()
        self.dropped = 0
        self.copies = CopyWatch(cuda)  # each batch's copy to the device (child/h2d.py)

    def active(self) -> bool:
        """CUDA is in use in this process (initialised by the user's code): events make sense."""
        try:
            return bool(self.cuda.is_initialized())
        except Exception:
            return False

    def enter(self) -> Any:
        if not self.active():
            return None
        ev = self.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def leave(self, entered: Any, index: int, site: int) -> None:
        if entered is None:
            return
        ev = self.cuda.Event(enable_timing=True)
        ev.record()
        self.pending.append((site, index, entered, ev))
        if len(self.pending) > MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1

    def ready(self) -> list[tuple[int, int, float]]:
        """(site, batch index, GPU-idle gap in s) of every boundary whose events completed,
        oldest first; stops at the first one still pending (the stream runs in order)."""
        out = []
        while self.pending:
            site, index, a, b = self.pending[0]
            if not b.query():
                break
            self.pending.popleft()
            out.append((site, index, max(0.0, a.elapsed_time(b) / 1000.0)))
        return out


def gpu_gaps() -> GpuGaps | None:
    """The real seam: None when this torch is built without CUDA (the CPU path stays as it
    is). Never asks whether a device is available: that starts the CUDA driver, which then
    ignores a CUDA_VISIBLE_DEVICES the script sets later (before its own first CUDA call, as
    scripts do); events are only recorded once the script has started CUDA itself."""
    import torch

    version = getattr(torch, "version", None)
    if getattr(version, "cuda", None) is None and getattr(version, "hip", None) is None:
        return None
    return GpuGaps(torch.cuda)
