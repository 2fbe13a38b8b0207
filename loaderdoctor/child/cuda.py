"""The accelerator seam of the child: what to call before reading the clock on CUDA."""

from __future__ import annotations


def cuda_sync():
    """Synchronise before reading the clock when CUDA is in use, so GPU time counts as
    compute, not data wait. None when there is no CUDA (nothing to wait for)."""
    import torch

    try:
        if not torch.cuda.is_available():
            return None
    except Exception:
        return None

    def sync() -> None:
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()

    return sync
