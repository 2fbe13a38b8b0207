"""The batch's copy to the GPU, timed without synchronizing (the host-to-device side of #19).

After the loader hands a batch over, the script (or Lightning, Accelerate, the Trainer)
moves its tensors to the device with `Tensor.to(...)` / `Tensor.cuda(...)`. On a CUDA build
those two methods are wrapped once: a call on a tensor of one of the last few batches, to a
device, is timed on both sides:

- host: the wall time of the call. From pageable memory the copy goes through a staging
  buffer and the host waits for it (even with non_blocking=True); from pinned memory with
  non_blocking=True the call returns at once and the copy is queued.
- GPU: two CUDA events on the current stream around the call, read lazily a few steps later
  with `event.query()` (never a wait, never a synchronize), like child/cuda.GpuGaps.

with its bytes, whether the source was pinned and whether non_blocking was asked. Every other
`.to` call (the model's, a dtype cast, a tensor of no recent batch) goes straight through after
one dict lookup, and while torch.compile traces the wrapper steps aside at once (no graph break).

`CopyWatch(cuda)` takes the `torch.cuda` module or a fake with the same few names (Event,
is_initialized), so the logic is tested without a GPU; which device counts is read from the
copy's result (`out.device.type != "cpu"`), so a test can stand a "meta" copy in for one.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable

KEEP_BATCHES = 4  # copies are matched to the last few batches: Lightning and Accelerate fetch one ahead
MAX_PENDING = 64  # finished batches waiting for their events; older ones are dropped (counted)
MAX_COPIES = 64  # copies timed per batch (a batch of many small tensors: the rest add bytes only)
MAX_TENSORS = 256  # tensors looked for in one batch


class _Copies:
    """The copies of one batch's tensors to the device."""

    __slots__ = ("site", "index", "refs", "bytes", "n", "host", "pinned", "nb", "device", "events")

    def __init__(self, site: int, index: int, refs: dict):
        self.site, self.index, self.refs = site, index, refs
        self.bytes = self.n = self.pinned = self.nb = 0
        self.host = 0.0
        self.device: str | None = None
        self.events: list = []


def batch_tensors(batch: Any, limit: int = MAX_TENSORS) -> list:
    """The tensors of a batch: nested lists, tuples and mappings (a dict, HF's BatchEncoding)."""
    out, stack = [], [batch]
    while stack and len(out) < limit:
        x = stack.pop()
        if hasattr(x, "is_pinned") and hasattr(x, "nbytes"):
            out.append(x)
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, Mapping):
            stack.extend(x.values())
    return out


def _non_blocking(args: tuple, kwargs: dict) -> bool:
    if "non_blocking" in kwargs:
        return bool(kwargs["non_blocking"])
    return any(a is True for a in args)  # every overload takes non_blocking as its first bool


class CopyWatch:
    def __init__(self, cuda: Any, clock: Callable[[], float] = time.perf_counter):
        self.cuda = cuda
        self.clock = clock
        self.recent: deque[_Copies] = deque()  # the last KEEP_BATCHES batches, newest last
        self.by_id: dict[int, _Copies] = {}  # id(tensor) -> its batch's record
        self.pending: deque[_Copies] = deque()
        self.dropped = 0

    def active(self) -> bool:
        try:
            return bool(self.cuda.is_initialized())
        except Exception:
            return False

    def arm(self, batch: Any, site: int, index: int) -> None:
        """A batch was handed over: its tensors' copies will be timed."""
        refs = {}
        rec = _Copies(site, index, refs)
        for t in batch_tensors(batch):
            try:
                refs[id(t)] = weakref.ref(t)
            except TypeError:
                continue
            self.by_id[id(t)] = rec
        self.recent.append(rec)
        if len(self.recent) > KEEP_BATCHES:
            self._retire(self.recent.popleft())

    def _retire(self, rec: _Copies) -> None:
        for key in rec.refs:
            if self.by_id.get(key) is rec:
                del self.by_id[key]
        rec.refs = {}
        if rec.n:
            self.pending.append(rec)
            if len(self.pending) > MAX_PENDING:
                self.pending.popleft()
                self.dropped += 1

    def copy(self, t: Any, orig: Callable, args: tuple, kwargs: dict) -> Any:
        rec = self.by_id.get(id(t))
        ref = rec.refs.get(id(t)) if rec is not None else None
        if ref is None or ref() is not t or not self.active():
            return orig(t, *args, **kwargs)
        before = self.cuda.Event(enable_timing=True)
        before.record()
        h0 = self.clock()
        out = orig(t, *args, **kwargs)
        h1 = self.clock()
        device = getattr(out, "device", None)
        if out is t or getattr(device, "type", "cpu") == "cpu" or getattr(t.device, "type", "cpu") != "cpu":
            return out  # no copy to a device: a cast, or already there
        after = self.cuda.Event(enable_timing=True)
        after.record()
        nbytes = int(t.nbytes)
        rec.bytes += nbytes
        rec.n += 1
        rec.host += h1 - h0
        rec.device = rec.device or str(device)
        if t.is_pinned():
            rec.pinned += nbytes
        if _non_blocking(args, kwargs):
            rec.nb += nbytes
        if len(rec.events) < MAX_COPIES:
            rec.events.append((before, after))
        return out

    def ready(self) -> list[dict]:
        """The copies of every retired batch whose events completed, oldest first; stops at
        the first one still pending (the stream runs in order)."""
        out = []
        while self.pending:
            rec = self.pending[0]
            if not all(b.query() for _, b in rec.events):
                break
            self.pending.popleft()
            gpu = sum(max(0.0, a.elapsed_time(b) / 1000.0) for a, b in rec.events)
            out.append({"l": rec.site, "i": rec.index, "bytes": rec.bytes, "n": rec.n, "host": round(rec.host, 6),
                        "gpu": round(gpu, 6), "pinned": rec.pinned, "nb": rec.nb, "device": rec.device})
        return out


def _is_compiling() -> Callable[[], bool]:
    try:
        import torch.compiler

        return torch.compiler.is_compiling
    except (ImportError, AttributeError):
        return lambda: False


def wrap(watch: CopyWatch, orig: Callable) -> Callable:
    """A Tensor method (to, cuda) that times the batch's copies and passes everything else."""
    compiling = _is_compiling()
    by_id = watch.by_id

    def method(self, *args, **kwargs):
        if id(self) not in by_id or compiling():
            return orig(self, *args, **kwargs)
        return watch.copy(self, orig, args, kwargs)

    method.__name__ = getattr(orig, "__name__", "to")
    method.__doc__ = getattr(orig, "__doc__", None)
    method._ld_orig = orig
    return method


def to_device(batch: Any, device: str) -> None:
    """The drain's copy of a batch, as a training step would move it: every tensor to
    `device`, non_blocking (what pinned memory makes asynchronous)."""
    for t in batch_tensors(batch):
        t.to(device, non_blocking=True)
