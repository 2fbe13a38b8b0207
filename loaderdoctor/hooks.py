"""What the runner installs in the user's process: DataLoader timing, overrides, worker setup.

Seams (see shared/research/torch-hooks.md):
  DataLoader.__init__               record the configuration; apply overrides by call site
  DataLoader.__iter__               iterator start time, worker pids, threads alive at fork
  _BaseDataLoaderIter.__next__      per-batch data wait and the compute between batches
  worker_init_fn (public, chained)  faulthandler in every worker (stack files for hangs/crashes)

Nothing here starts a thread or holds a reference to an iterator: per-iterator state lives
on the iterator itself. Everything patched is restored by uninstall().
"""

from __future__ import annotations

import faulthandler
import inspect
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from loaderdoctor.codeloc import is_user_file, short_path
from loaderdoctor.metrics import loader_warmup


class StopProbe(BaseException):
    """Raised inside the script's loop when enough was measured. A BaseException, so the
    script's own `except Exception:` does not swallow it."""


# ---------------------------------------------------------------- worker side


class ChainedWorkerInit:
    """worker_init_fn wrapper: faulthandler into a per-worker stack file, then the user's
    function. Module-level and plain attributes, so it pickles under spawn/forkserver."""

    def __init__(self, user_fn: Callable[[int], Any] | None, stack_dir: str | None):
        self.user_fn = user_fn
        self.stack_dir = stack_dir

    def __call__(self, worker_id: int) -> None:
        if self.stack_dir:
            enable_stack_file(self.stack_dir, "worker")
        if self.user_fn is not None:
            self.user_fn(worker_id)


_STACK_FILES: list = []  # kept open for the life of the process: faulthandler writes to its fd


def enable_stack_file(stack_dir: str, role: str) -> str | None:
    """faulthandler: fatal signals and SIGUSR1 dump every thread's Python stack into
    stack_dir/<role>-<pid>.txt. Returns the path, or None when it cannot be set up."""
    try:
        path = os.path.join(stack_dir, f"{role}-{os.getpid()}.txt")
        f = open(path, "a", buffering=1)
        # A forked worker inherits the parent's faulthandler, and torch then installs its
        # own SIGSEGV/SIGBUS handlers over it; enable() alone would keep torch's. Disable and
        # enable again so faulthandler dumps first and then chains to torch's handler.
        faulthandler.disable()
        faulthandler.enable(file=f, all_threads=True)
        if hasattr(faulthandler, "register"):
            faulthandler.register(signal.SIGUSR1, file=f, all_threads=True, chain=False)
        _STACK_FILES.append(f)
        return path
    except (OSError, ValueError, RuntimeError):
        return None


# ---------------------------------------------------------------- main side


def count_samples(batch: Any, default: int = 1) -> int:
    """Samples in a batch: the leading dimension of the first tensor found."""
    for _ in range(8):
        shape = getattr(batch, "shape", None)
        if shape is not None:
            return int(shape[0]) if len(shape) else default
        if isinstance(batch, (list, tuple)):
            if not batch:
                return default
            batch = batch[0]
        elif isinstance(batch, dict):
            if not batch:
                return default
            batch = next(iter(batch.values()))
        else:
            return default
    return default


def batch_bytes(batch: Any, limit: int = 10_000) -> tuple[int, int]:
    """(bytes, tensors) in a batch: what crosses /dev/shm per batch from a worker."""
    total = count = 0
    stack = [batch]
    while stack and count < limit:
        x = stack.pop()
        nbytes = getattr(x, "nbytes", None)
        if nbytes is not None and hasattr(x, "shape"):
            total += int(nbytes)
            count += 1
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
    return total, count


_POOL_LIBS = ("libgomp", "libiomp", "libomp", "libopenblas", "libmkl_rt", "cv2", "libtbb")


def native_thread_pools() -> list[str]:
    """Native libraries with thread pools mapped in this process (fork-unsafe when their
    threads are running at fork): read once per iterator that starts workers."""
    found = set()
    try:
        with open(f"/proc/{os.getpid()}/maps") as f:
            for line in f:
                path = line.rsplit(" ", 1)[-1].strip()
                base = os.path.basename(path)
                for lib in _POOL_LIBS:
                    if base.startswith(lib):
                        found.add(base.split(".so")[0])
    except OSError:
        pass
    return sorted(found)


def call_site(depth: int = 2, chain: int = 3) -> str:
    """Where a loader was constructed: the innermost user frames, innermost first, e.g.
    "train.py:9 < train.py:31". The chain tells apart train and validation loaders that
    one helper function builds."""
    f = sys._getframe(depth)
    found: list[str] = []
    outermost = None
    while f is not None and len(found) < chain:
        fn = f.f_code.co_filename
        if is_user_file(fn):
            found.append(f"{short_path(fn)}:{f.f_lineno}")
        outermost = f
        f = f.f_back
    if found:
        return " < ".join(found)
    if outermost is not None:
        return f"{short_path(outermost.f_code.co_filename)}:{outermost.f_lineno}"
    return "?"


def _describe(obj: Any) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
        t = obj
    else:
        t = type(obj)
    return f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', repr(t))}"


def loader_config(loader: Any) -> dict:
    ds = loader.dataset
    try:
        length = len(ds)
    except Exception:  # IterableDataset without __len__, or a broken __len__
        length = None
    ctx = loader.multiprocessing_context
    if loader.num_workers == 0:
        method = None
    elif ctx is None:
        import multiprocessing

        method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_context().get_start_method()
    else:
        method = ctx.get_start_method() if hasattr(ctx, "get_start_method") else str(ctx)
    wif = loader.worker_init_fn
    if isinstance(wif, ChainedWorkerInit):
        wif = wif.user_fn
    return {
        "loader_class": _describe(type(loader)),
        "dataset": _describe(type(ds)),
        "dataset_len": length,
        "num_workers": loader.num_workers,
        "batch_size": loader.batch_size,
        "drop_last": loader.drop_last,
        "pin_memory": bool(loader.pin_memory),
        "persistent_workers": bool(loader.persistent_workers),
        "prefetch_factor": loader.prefetch_factor,
        "start_method": method,
        "timeout": loader.timeout,
        "collate_fn": _describe(loader.collate_fn),
        "sampler": _describe(type(loader.sampler)) if loader.sampler is not None else None,
        "batch_sampler": _describe(type(loader.batch_sampler)) if loader.batch_sampler is not None else None,
        "worker_init_fn": _describe(wif),
    }


def apply_overrides(arguments: dict, overrides: dict) -> None:
    """Change DataLoader constructor arguments in place, keeping the combination valid."""
    arguments.update(overrides)
    if arguments.get("num_workers", 0) == 0:
        # torch rejects these with num_workers=0
        arguments["persistent_workers"] = False
        arguments["prefetch_factor"] = None
        arguments["multiprocessing_context"] = None
        arguments["timeout"] = 0


class _IterState:
    __slots__ = ("site", "t_start", "t_last", "count", "first")

    def __init__(self, site: int, t_start: float | None):
        self.site = site
        self.t_start = t_start
        self.t_last: float | None = None
        self.count = 0
        self.first = True


class Recorder:
    """Turns hook calls into events. The clock and the accelerator sync are parameters
    so the timing logic is testable with a fake clock."""

    def __init__(
        self,
        emit: Callable[[str], None],
        *,
        steps: int = 50,
        warmup: int = 3,
        max_seconds: float | None = None,
        overrides: dict | None = None,
        override_site: str | None = None,
        stack_dir: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sync: Callable[[], None] | None = None,
        mode: str = "train",
        target_site: str | None = None,
        drain_seconds: float | None = None,
        stage_dir: str | None = None,
    ):
        self.emit = emit
        # per-batch events: gathered by an emitter that can (runner.Emitter.batch)
        batch = getattr(emit, "batch", None)
        self.emit_batch: Callable[[str, float], None] = batch if batch is not None else (lambda line, now: emit(line))
        self.steps = steps
        self.warmup = warmup
        self.max_seconds = max_seconds
        self.overrides = overrides or {}
        self.override_site = override_site
        self.stack_dir = stack_dir
        self.clock = clock
        self.sync = sync
        self.pid = os.getpid()
        # In a forked child (a worker) the hooks stay patched but must do nothing; a flag set
        # at fork keeps a getpid() syscall off the per-step path.
        self.in_child = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._mark_child)
        self.t0 = clock()
        self.sites: dict[str, int] = {}
        self.batches: dict[int, int] = {}  # site -> batches seen (all iterators)
        self.measured: dict[int, int] = {}  # site -> batches that count as measured steps
        self.site_warmup: dict[int, int] = {}  # site -> warm-up batches (metrics.loader_warmup)
        self.stopping = False
        # train: the script's own loop is measured. drain / transforms: when the target
        # loader is first iterated, loaderdoctor drives it itself, then stops the script.
        self.mode = mode
        self.target_site = target_site
        self.drain_seconds = drain_seconds
        self.stage_dir = stage_dir
        self.busy = False
        self.drain_from_first_batch = False

    def _mark_child(self) -> None:
        self.in_child = True

    # -- construction
    def site_index(self, site: str) -> int:
        idx = self.sites.get(site)
        if idx is None:
            idx = self.sites[site] = len(self.sites)
        return idx

    def before_init(self, site: str, arguments: dict) -> dict | None:
        if self.overrides and (self.override_site is None or self.override_site == site):
            before = {k: arguments.get(k) for k in self.overrides}
            apply_overrides(arguments, self.overrides)
            return before
        return None

    def after_init(self, loader: Any, site: str, overridden: dict | None) -> None:
        if self.stack_dir and not isinstance(loader.worker_init_fn, ChainedWorkerInit):
            loader.worker_init_fn = ChainedWorkerInit(loader.worker_init_fn, self.stack_dir)
        idx = self.site_index(site)
        loader._ld_site = idx
        loader._ld_site_name = site
        self.site_warmup[idx] = loader_warmup({"num_workers": loader.num_workers,
                                               "prefetch_factor": loader.prefetch_factor}, self.warmup)
        try:
            cfg = loader_config(loader)
        except Exception as exc:  # never break the user's loader over a description
            cfg = {"error": f"{type(exc).__name__}: {exc}"}
        self.emit(json.dumps({"e": "loader", "l": idx, "site": site, "config": cfg,
                              "overridden": overridden}, default=str))

    # -- iteration
    def on_iter(self, loader: Any, it: Any, t_start: float, threads: list[str]) -> None:
        idx = getattr(loader, "_ld_site", None)
        if idx is None:
            idx = self.site_index(call_site(3))
        it._ld_state = _IterState(idx, t_start)
        # What estimate_batch needs, not the loader: with persistent workers the loader holds this
        # iterator, and a reference back would delay its __del__ (worker shutdown) to the cyclic
        # GC. The iterator already holds the dataset, so this adds no lifetime.
        it._ld_sample_source = (loader.dataset, loader.batch_size, idx)
        workers = getattr(it, "_workers", None) or []
        pids = [getattr(w, "pid", None) for w in workers]
        try:
            import torch

            cuda_init = bool(torch.cuda.is_initialized())
        except Exception:
            cuda_init = None
        ev = {"e": "it", "l": idx, "t": t_start - self.t0, "workers": pids, "threads": threads,
              "cuda_init": cuda_init}
        if pids:
            ev["native_pools"] = native_thread_pools()
            try:  # how the workers' tensors reach this process: one descriptor each, or named files
                import torch.multiprocessing as tmp

                ev["sharing_strategy"] = tmp.get_sharing_strategy()
            except Exception:
                pass
        self.emit(json.dumps(ev))

    def on_iter_error(self, loader: Any, exc: Exception) -> None:
        """Starting the iterator failed (under spawn/forkserver: pickling the dataset or
        functions for the workers): name the first attribute that cannot be pickled."""
        self.emit(json.dumps({"e": "it_error", "l": getattr(loader, "_ld_site", None), "type": type(exc).__name__,
                              "message": str(exc)[:500]}))
        if loader.num_workers == 0:
            return
        from loaderdoctor.picklecheck import first_unpicklable

        wif = loader.worker_init_fn
        parts = {"dataset": loader.dataset, "collate_fn": loader.collate_fn,
                 "worker_init_fn": wif.user_fn if isinstance(wif, ChainedWorkerInit) else wif}
        try:
            found = first_unpicklable(parts)
        except Exception as err:  # never let the diagnosis replace the user's error
            found = {"path": None, "error": f"{type(err).__name__}: {err}"}
        self.emit(json.dumps({"e": "pickle", "l": getattr(loader, "_ld_site", None), "exc_type": type(exc).__name__,
                              "exc": str(exc)[:500], **(found or {"path": None})}, default=str))

    def before_next(self, it: Any, t0: float) -> _IterState | None:
        if self.in_child:
            return None
        st = it.__dict__.get("_ld_state")
        if st is None:
            st = it._ld_state = _IterState(self.site_index("?"), None)
        if self.stopping or self.measured.get(st.site, 0) >= self.steps:
            self._stop(st, t0, "steps")
        if self.max_seconds is not None and t0 - self.t0 >= self.max_seconds:
            self._stop(st, t0, "time")
        return st

    def _stop(self, st: _IterState, t0: float, why: str) -> None:
        if not self.stopping:
            self.stopping = True
            c = None if st.t_last is None else t0 - st.t_last
            self.emit(f'{{"e":"end","l":{st.site},"c":{_num(c)},"why":"stop"}}')
            self.emit(f'{{"e":"stop","why":"{why}"}}')
        raise StopProbe(why)

    def on_batch(self, st: _IterState | None, t0: float, t1: float, batch: Any) -> None:
        if st is None:
            return
        prev_c = None if st.t_last is None else t0 - st.t_last
        n = count_samples(batch)
        site = st.site
        seen = self.batches.get(site, 0)
        self.batches[site] = seen + 1
        if self.drain_from_first_batch:
            self.drain_from_first_batch = False
            self.max_seconds = (t1 - self.t0) + self.drain_seconds
        if st.first:
            s = None if st.t_start is None else t1 - st.t_start
            nbytes, ntensors = batch_bytes(batch)
            self.emit(f'{{"e":"b","l":{site},"i":{st.count},"w":{t1 - t0:.6f},"c":null,"n":{n},"s":{_num(s)},'
                      f'"bytes":{nbytes},"tensors":{ntensors}}}')
            st.first = False
        else:
            if seen > self.site_warmup.get(site, self.warmup):
                self.measured[site] = self.measured.get(site, 0) + 1
            self.emit_batch(f'{{"e":"b","l":{site},"i":{st.count},"w":{t1 - t0:.6f},"c":{_num(prev_c)},"n":{n}}}', t1)
        st.count += 1
        st.t_last = t1

    # -- loaderdoctor driving the loader itself
    def takes_over(self, loader: Any) -> bool:
        if self.mode == "train" or self.busy or self.in_child:
            return False
        site = getattr(loader, "_ld_site_name", None)
        return self.target_site is None or site == self.target_site

    def drain(self, loader: Any) -> None:
        """Loader-only: iterate the loader without the training step until enough steps
        were measured (StopProbe from before_next) or the drain's time bound."""
        self.busy = True
        # the time bound counts from the first batch: starting workers (spawn re-imports,
        # a large pickled dataset) is not what is measured, and the watchdog bounds it
        self.drain_from_first_batch = self.drain_seconds is not None
        for _ in range(100_000):  # epochs, if one epoch is shorter than the steps wanted
            for _batch in loader:
                pass
        raise StopProbe("steps")

    def on_error(self, it: Any) -> None:
        """The iterator failed: record its workers' exit codes (negative = killed by that
        signal), which torch's "exited unexpectedly" message leaves out."""
        codes = {}
        deadline = time.monotonic() + 1.0  # a worker killed a moment ago may not be reapable yet
        for w in getattr(it, "_workers", None) or []:
            try:
                if w.exitcode is None:
                    w.join(timeout=max(0.0, deadline - time.monotonic()))
                codes[str(w.pid)] = w.exitcode
            except Exception:
                continue
        if codes:
            self.emit(json.dumps({"e": "wexit", "codes": codes}))

    def estimate_batch(self, dataset: Any, batch_size: int | None, site: int, exc: BaseException) -> None:
        """Shared memory ran out before any batch arrived: measure one sample here, in the
        main process, so the report can show the arithmetic (bytes x batch size)."""
        text = str(exc)
        if not any(s in text for s in ("shared memory", "No space left on device", "Bus error", "shm")):
            return
        try:
            nbytes, ntensors = batch_bytes(dataset[0])
        except Exception:
            return
        bs = batch_size or 1
        self.emit(json.dumps({"e": "batch_estimate", "l": site,
                              "bytes": nbytes * bs, "tensors": ntensors, "from": "one sample x batch_size"}))

    def on_exhausted(self, st: _IterState | None, t0: float) -> None:
        if st is None or st.t_last is None:
            return
        self.emit(f'{{"e":"end","l":{st.site},"c":{t0 - st.t_last:.6f},"why":"epoch"}}')
        st.t_last = None


def _num(x: float | None) -> str:
    return "null" if x is None else f"{x:.6f}"


def hello(**extra) -> dict:
    """The first event of a run: who measures, under which Python and torch."""
    import multiprocessing
    import platform

    import torch

    return {"e": "hello", "pid": os.getpid(), "python": platform.python_version(), "torch": torch.__version__,
            "start_method_default": multiprocessing.get_start_method(allow_none=True)
            or multiprocessing.get_context().get_start_method(),
            "cuda_available": bool(torch.cuda.is_available()), **extra}


def recorder_from_spec(spec: dict, emit: Callable[[str], None], sync: Callable[[], None] | None) -> Recorder:
    return Recorder(
        emit, steps=int(spec.get("steps", 50)), warmup=int(spec.get("warmup", 3)),
        max_seconds=spec.get("max_seconds"), overrides=spec.get("overrides") or {},
        override_site=spec.get("override_site"), stack_dir=spec.get("stack_dir"), sync=sync,
        mode=spec.get("mode", "train"), target_site=spec.get("target_site"),
        drain_seconds=spec.get("drain_seconds"), stage_dir=spec.get("stage_dir"))


# ---------------------------------------------------------------- install / uninstall

_PATCHED: list[tuple[Any, str, Any]] = []


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
    sync = rec.sync

    def __init__(self, *args, **kwargs):
        site = call_site(2)
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
        rec.after_init(self, site, overridden)

    def __iter__(self):
        if rec.takes_over(self):
            if rec.mode == "transforms":
                from loaderdoctor import pipeline

                pipeline.run_transforms_stage(rec, self)
            rec.drain(self)
        t_start = clock()
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        try:
            it = orig_iter(self)
        except Exception as exc:
            rec.on_iter_error(self, exc)
            raise
        try:
            rec.on_iter(self, it, t_start, threads)
        except AttributeError:  # an iterator type that refuses attributes: time it anyway
            pass
        return it

    def __next__(self):
        if sync is not None:
            sync()
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
        rec.on_batch(st, t0, clock(), batch)
        return batch

    for owner, name, new in ((DataLoader, "__init__", __init__), (DataLoader, "__iter__", __iter__),
                             (base_iter, "__next__", __next__)):
        _PATCHED.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)
    __init__.__wrapped__ = orig_init  # for inspect.signature() of DataLoader in user code


def uninstall() -> None:
    while _PATCHED:
        owner, name, orig = _PATCHED.pop()
        setattr(owner, name, orig)
