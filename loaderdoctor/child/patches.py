"""What the runner patches in the user's process: DataLoader timing, overrides, worker setup.

Seams (see shared/research/torch-hooks.md):
  DataLoader.__init__               record the configuration; apply overrides by call site
  DataLoader.__iter__               iterator start time, worker pids, threads alive at fork
  _BaseDataLoaderIter.__next__      per-batch data wait and the compute between batches
  worker_init_fn (public, chained)  faulthandler in every worker (stack files for hangs/crashes)

Everything patched is restored by uninstall()."""

from __future__ import annotations

import inspect
import json
import threading
from typing import Any

from loaderdoctor.child.describe import construction, dataset_tag
from loaderdoctor.child.recorder import Recorder

_PATCHED: list[tuple[Any, str, Any]] = []
_HANDLES: list[Any] = []  # torch hook handles (optimizer step, module forward)
_INHERITED = object()  # patched where the owner only inherited it: uninstall deletes ours


def installed() -> bool:
    return bool(_PATCHED)


def install(rec: Recorder) -> None:
    """Patch torch's DataLoader seams for this process. Idempotent per process."""
    if _PATCHED:
        raise RuntimeError("loaderdoctor hooks are already installed")
    from torch.utils.data import DataLoader
    from torch.utils.data import dataloader as dl_mod

    base_iter = dl_mod._BaseDataLoaderIter
    orig_init = DataLoader.__init__
    orig_iter = DataLoader.__iter__
    orig_next = base_iter.__next__
    sig = inspect.signature(orig_init)
    clock = rec.clock

    def __init__(self, *args, **kwargs):
        built_at, via, origin = construction(2)
        site = rec.loader_key(built_at, via, dataset_tag(args[0] if args else kwargs.get("dataset")))
        overridden = None
        if rec.overrides:
            try:
                bound = sig.bind(self, *args, **kwargs)
            except TypeError:
                bound = None
            if bound is not None:
                bound.apply_defaults()  # so "before" shows the effective values
                overridden = rec.before_init(site, bound.arguments)
                if overridden is not None:
                    args, kwargs = bound.args[1:], bound.kwargs
        orig_init(self, *args, **kwargs)
        rec.after_init(self, site, overridden, built_at=built_at, via=via, origin=origin)

    def __iter__(self):
        if rec.takes_over(self):
            if rec.mode == "transforms":
                from loaderdoctor.child import pipeline

                pipeline.run_transforms_stage(rec, self)
            rec.drain(self)
        t_start = clock()
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        # The workers get our setup (stack files, the parent watch) chained before the user's
        # worker_init_fn only while they start: the attribute itself stays what the user and the
        # framework set (Lightning adds its seeding worker_init_fn only where it finds None).
        user_init = self.worker_init_fn
        setup = rec.worker_setup(self) if self.num_workers > 0 else None
        chained = setup is not None
        if chained:
            self.worker_init_fn = setup
        try:
            it = orig_iter(self)
        except Exception as exc:
            rec.on_iter_error(self, exc)
            raise
        finally:
            if chained:
                self.worker_init_fn = user_init
        try:
            rec.on_iter(self, it, t_start, threads)
        except AttributeError:  # an iterator type that refuses attributes: time it anyway
            pass
        return it

    __next__ = _next_hook(rec, orig_next)

    for owner, name, new in ((DataLoader, "__init__", __init__), (DataLoader, "__iter__", __iter__),
                             (base_iter, "__next__", __next__)):
        _PATCHED.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)
    __init__.__wrapped__ = orig_init  # for inspect.signature() of DataLoader in user code
    _install_step_hooks(rec)
    if rec.gpu is not None:
        _install_copy_hooks(rec.gpu.copies)


def _install_copy_hooks(copies: Any) -> None:
    """On a CUDA build: Tensor.to and Tensor.cuda time the batch's copies to the device
    (child/h2d.py); every other call passes after one dict lookup."""
    import torch

    from loaderdoctor.child import h2d

    for name in ("to", "cuda"):
        orig = getattr(torch.Tensor, name)
        _PATCHED.append((torch.Tensor, name, torch.Tensor.__dict__.get(name, _INHERITED)))
        setattr(torch.Tensor, name, h2d.wrap(copies, orig))


def _install_step_hooks(rec: Recorder) -> None:
    """The optimizer defines the step: a global post-hook on Optimizer.step (every framework
    calls it), and after each step a one-shot global forward pre-hook that notes the model's
    first forward of the next step and removes itself (so every other module call of the step
    runs without a global hook)."""
    import torch

    try:
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_post_hook
    except ImportError:  # a torch without global hooks: loader timing alone
        return
    clock = rec.clock
    rec.grad_enabled = torch.is_grad_enabled
    forward: list = [None]

    def first_forward(module, args):
        handle = forward[0]
        if handle is not None:
            forward[0] = None
            handle.remove()
            rec.on_forward(clock())

    def after_step(optimizer, args, kwargs):
        if rec.in_child:
            return
        rec.on_optimizer_step(clock())
        if forward[0] is None:
            forward[0] = register_module_forward_pre_hook(first_forward)

    _HANDLES.append(register_optimizer_step_post_hook(after_step))
    _HANDLES.append(forward)


def _next_hook(rec: Recorder, orig_next):
    """The per-step path: the wait for each batch, the compute since the last, and on CUDA the
    GPU-idle gap at the boundary (events only, never a synchronize)."""
    clock, gpu = rec.clock, rec.gpu

    def __next__(self):
        entered = gpu.enter() if gpu is not None else None  # no synchronize: events, read later
        t0 = clock()
        st = rec.before_next(self, t0)
        try:
            batch = orig_next(self)
        except StopIteration:
            rec.on_exhausted(st, t0)
            raise
        except Exception as exc:
            rec.on_error(self)
            source = getattr(self, "_ld_sample_source", None)
            if source is not None:
                rec.estimate_batch(*source, exc)
            raise
        t1 = clock()
        rec.on_batch(st, t0, t1, batch)
        if entered is not None and st is not None:
            gpu.leave(entered, st.count - 1, st.site)
            ready = gpu.ready()
            if ready:
                rec.on_gpu_gaps(ready, t1)
            gpu.copies.arm(batch, st.site, st.count - 1)
            for copied in gpu.copies.ready():
                rec.emit_batch(json.dumps({"e": "h2d", **copied}), t1)
        return batch

    return __next__


def uninstall() -> None:
    while _PATCHED:
        owner, name, orig = _PATCHED.pop()
        if orig is _INHERITED:
            delattr(owner, name)
        else:
            setattr(owner, name, orig)
    while _HANDLES:
        h = _HANDLES.pop()
        if isinstance(h, list):  # the one-shot forward hook's holder
            holder, h = h, h[0]
            holder[0] = None
        if h is not None:
            h.remove()
