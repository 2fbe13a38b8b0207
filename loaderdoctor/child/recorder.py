"""The Recorder: hook calls in the user's process -> events for the parent.

Nothing here starts a thread or holds a reference to an iterator: per-iterator state lives
on the iterator itself."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from loaderdoctor.child import datasetinfo, workerevents
from loaderdoctor.child.describe import (
    apply_overrides,
    batch_bytes,
    call_site,
    count_samples,
    loader_config,
    native_thread_pools,
)
from loaderdoctor.child.h2d import to_device
from loaderdoctor.child.worker import ChainedWorkerInit
from loaderdoctor.protocol import (
    DEFAULT_STEPS,
    DEFAULT_WARMUP,
    RunnerSpec,
    loader_warmup,
)


def co_feeding(since_step: dict[int, int], last: int | None) -> list[int]:
    """The loaders an optimizer step consumed: the one whose batch came last before it, and
    any other that drew as many batches since the previous step (loaders consumed together,
    `zip(a, b)`, one batch of each per step, or k of each with gradient accumulation). An
    evaluation pass in between draws its whole loader, not the training loader's count."""
    if last is None:
        return []
    if len(since_step) <= 1:  # one loader feeds the loop: the usual case, nothing to compare
        return [last]
    n = since_step.get(last, 0)
    return sorted({last, *(s for s, k in since_step.items() if k == n and n > 0)})


class StopProbe(BaseException):
    """Raised inside the script's loop when enough was measured. A BaseException, so the
    script's own `except Exception:` does not swallow it."""


DRAIN_MAX_SKIPPED = 20  # batches whose loading raised that a drain steps over, as the user's loop did


def _fatal_to_iterator(exc: BaseException) -> bool:
    """A worker that died (not a sample that raised): the iterator cannot go on."""
    text = str(exc)
    return "exited unexpectedly" in text or "killed by signal" in text or "is killed" in text


class _IterState:
    __slots__ = ("site", "t_start", "t_last", "count", "first")

    def __init__(self, site: int, t_start: float | None):
        self.site = site
        self.t_start = t_start
        self.t_last: float | None = None
        self.count = 0
        self.first = True


class Recorder:
    """Turns hook calls into events. The clock and the GPU seam (child/cuda.GpuGaps) are parameters
    so the timing logic is testable with a fake clock."""

    def __init__(
        self,
        emit: Callable[[str], None],
        *,
        steps: int = DEFAULT_STEPS,
        warmup: int = DEFAULT_WARMUP,
        max_seconds: float | None = None,
        overrides: dict | None = None,
        override_site: str | None = None,
        stack_dir: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
        gpu: Any = None,
        mode: str = "train",
        target_site: str | None = None,
        drain_seconds: float | None = None,
        stage_dir: str | None = None,
        copy_to: str | None = None,
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
        self.gpu = gpu  # GpuGaps on CUDA: the GPU-idle gap at each batch boundary, read lazily
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
        self.site_warmup: dict[int, int] = {}  # site -> warm-up batches (stepstats.loader_warmup)
        self.stopping = False
        # train: the script's own loop is measured. drain / transforms: when the target
        # loader is first iterated, loaderdoctor drives it itself, then stops the script.
        self.mode = mode
        self.target_site = target_site
        self.drain_seconds = drain_seconds
        self.copy_to = copy_to  # drain: each batch copied to this device, as training would (child/h2d.py)
        self.stage_dir = stage_dir
        self.busy = False
        self.drain_from_first_batch = False
        # The step is defined by the optimizer: a post-hook on Optimizer.step marks each
        # training step's end; a one-shot module forward pre-hook marks the next step's first
        # forward. The loader whose batches precede optimizer steps is the training loader;
        # loaders consumed together (zip(a, b)) each feed the step (co_feeding).
        self.last_site: int | None = None
        self.since_step: dict[int, int] = {}  # site -> batches drawn since the last optimizer step
        self.site_opt: dict[int, int] = {}  # site -> optimizer steps that followed its batches
        self.opt_steps = 0
        self.t_step_end: float | None = None
        self.t_forward: float | None = None
        self.backward_s: float | None = None  # distributed: backward time since the last step (distrank)
        self.grad_enabled: Callable[[], bool] = lambda: True
        self.site_keys: dict[str, list[str]] = {}  # site -> dataset tags seen there, in order
        self.finish_hook: Callable[[], None] | None = None  # the runner's: flush and leave
        self.first_iter: Callable[[], None] | None = None  # the runner's: at the first iterator, once
        self.channel = workerevents.channel_of(emit)  # the event pipe, for the workers' own events
        self.described: set[int] = set()  # loaders whose dataset was described ("ds")

    def _mark_child(self) -> None:
        self.in_child = True

    # -- construction
    def site_index(self, site: str) -> int:
        idx = self.sites.get(site)
        if idx is None:
            idx = self.sites[site] = len(self.sites)
        return idx

    def loader_key(self, site: str, via: str, tag: str) -> str:
        """The loader's identity across stages: where it was built, through which library
        functions, and (when one place builds several) the ordinal of its dataset there."""
        key = f"{site} via {via}" if via else site
        tags = self.site_keys.setdefault(key, [])
        if tag not in tags:
            tags.append(tag)
        k = tags.index(tag)
        return key if k == 0 else f"{key} #{k + 1}"

    def worker_setup(self, loader: Any) -> ChainedWorkerInit | None:
        """What each worker of this loader runs first (stack files, fetch events, the parent
        watch), chained before the user's worker_init_fn while the workers start."""
        if not (self.stack_dir or self.channel) or isinstance(loader.worker_init_fn, ChainedWorkerInit):
            return None
        idx = getattr(loader, "_ld_site", None)
        events = {"channel": self.channel, "t0": self.t0, "site": idx} if self.channel and idx is not None else None
        return ChainedWorkerInit(loader.worker_init_fn, self.stack_dir, events)

    def before_init(self, site: str, arguments: dict) -> dict | None:
        if self.overrides and (self.override_site is None or self.override_site == site):
            before = {k: arguments.get(k) for k in self.overrides}
            apply_overrides(arguments, self.overrides)
            return before
        return None

    def after_init(self, loader: Any, site: str, overridden: dict | None, built_at: str | None = None,
                   via: str | None = None, origin: str | None = None) -> None:
        idx = self.site_index(site)
        loader._ld_site = idx
        loader._ld_site_name = site
        self.site_warmup[idx] = loader_warmup({"num_workers": loader.num_workers,
                                               "prefetch_factor": loader.prefetch_factor}, self.warmup)
        try:
            cfg = loader_config(loader)
        except Exception as exc:  # never break the user's loader over a description
            cfg = {"error": f"{type(exc).__name__}: {exc}"}
        self.emit(json.dumps({"e": "loader", "l": idx, "site": site, "built_at": built_at, "via": via or None, "origin": origin,
                              "config": cfg, "overridden": overridden}, default=str))

    # -- iteration
    def on_iter(self, loader: Any, it: Any, t_start: float, threads: list[str]) -> None:
        if self.first_iter is not None and not self.in_child:  # the script's own process only
            first, self.first_iter = self.first_iter, None
            first()
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
        if idx not in self.described:  # once per loader: its dataset's Python containers
            self.described.add(idx)
            self.emit(json.dumps(datasetinfo.describe_event(loader, idx), default=str))

    def on_iter_error(self, loader: Any, exc: Exception) -> None:
        """Starting the iterator failed (under spawn/forkserver: pickling the dataset or
        functions for the workers): name the first attribute that cannot be pickled."""
        self.emit(json.dumps({"e": "it_error", "l": getattr(loader, "_ld_site", None), "type": type(exc).__name__,
                              "message": str(exc)[:500]}))
        if loader.num_workers == 0:
            return
        from loaderdoctor.child.picklecheck import first_unpicklable

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
        self.finish(why)

    def finish(self, why: str) -> None:
        """The stage has what it needs: the last events, then the runner's finish hook ends
        the process at once (no user or framework code runs after the measured steps). Without
        a hook (in-process use, unit tests) StopProbe is raised instead."""
        self.stopping = True
        self.emit(f'{{"e":"stop","why":"{why}"}}')
        if self.finish_hook is not None:
            self.finish_hook()
        raise StopProbe(why)

    # -- the optimizer's step: what is training, and the loop's own boundary
    def on_optimizer_step(self, now: float) -> None:
        if self.in_child:
            return
        self.opt_steps += 1
        site = self.last_site
        fed = co_feeding(self.since_step, site)
        self.since_step.clear()
        for s in fed:
            self.site_opt[s] = self.site_opt.get(s, 0) + 1
        co = f',"ls":[{",".join(str(s) for s in fed)}]' if len(fed) > 1 else ""
        prev, fwd = self.t_step_end, self.t_forward
        f = None if prev is None or fwd is None or fwd < prev else fwd - prev
        k = "" if self.backward_s is None else f',"k":{self.backward_s:.6f}'
        if self.backward_s is not None:
            self.backward_s = 0.0
        self.emit_batch(f'{{"e":"o","l":{_num_or_null(site)},"t":{now - self.t0:.6f},"f":{_num(f)}{k}{co}}}', now)
        self.t_step_end, self.t_forward = now, None

    def on_forward(self, now: float) -> None:
        if self.t_forward is None:
            self.t_forward = now

    def _counts(self, site: int, grad: bool) -> bool:
        """Does this batch count toward the stage's measured steps? In the user's own loop
        only the training loader's do: batches followed by optimizer steps, or, while no
        optimizer step was seen at all, batches drawn with gradients enabled (an evaluation
        loader runs under no_grad/inference_mode). Loaderdoctor's own drains count all."""
        if self.mode != "train":
            return True
        if self.site_opt:  # a loader credited now and then (a one-batch evaluation) is not training
            return 2 * self.site_opt.get(site, 0) >= max(self.site_opt.values())
        return grad

    def on_batch(self, st: _IterState | None, t0: float, t1: float, batch: Any) -> None:
        if st is None:
            return
        prev_c = None if st.t_last is None else t0 - st.t_last
        n = count_samples(batch)
        site = st.site
        self.last_site = site
        self.since_step[site] = self.since_step.get(site, 0) + 1
        grad = self.grad_enabled()
        seen = self.batches.get(site, 0)
        self.batches[site] = seen + 1
        if self.drain_from_first_batch:
            self.drain_from_first_batch = False
            self.max_seconds = (t1 - self.t0) + self.drain_seconds
        if st.first:
            s = None if st.t_start is None else t1 - st.t_start
            nbytes, ntensors = batch_bytes(batch)
            self.emit(f'{{"e":"b","l":{site},"i":{st.count},"w":{t1 - t0:.6f},"c":null,"n":{n},"s":{_num(s)},'
                      f'"t":{t1 - self.t0:.6f},"g":{int(grad)},"bytes":{nbytes},"tensors":{ntensors}}}')
            st.first = False
        else:
            if seen > self.site_warmup.get(site, self.warmup) and self._counts(site, grad):
                self.measured[site] = self.measured.get(site, 0) + 1
            g = "" if grad else ',"g":0'
            self.emit_batch(f'{{"e":"b","l":{site},"i":{st.count},"w":{t1 - t0:.6f},"c":{_num(prev_c)},"n":{n},'
                            f'"t":{t1 - self.t0:.6f}{g}}}', t1)
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
        skipped = 0
        for _ in range(100_000):  # epochs, if one epoch is shorter than the steps wanted
            it = iter(loader)
            while True:
                try:
                    batch = next(it)
                    if self.copy_to:
                        to_device(batch, self.copy_to)
                except StopIteration:
                    break
                except Exception as exc:  # the real run went on past it (the baseline passed): so do we
                    skipped += 1
                    if skipped > DRAIN_MAX_SKIPPED or _fatal_to_iterator(exc):
                        raise
                    self.emit(json.dumps({"e": "skipped", "type": type(exc).__name__, "n": skipped}))
        self.finish("steps")

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

    def on_gpu_gaps(self, ready: list[tuple[int, int, float]], now: float) -> None:
        """GPU-idle gaps whose events completed (child/cuda.GpuGaps.ready)."""
        for site, index, gap in ready:
            self.emit_batch(f'{{"e":"gg","l":{site},"i":{index},"g":{gap:.6f}}}', now)

    def on_exhausted(self, st: _IterState | None, t0: float) -> None:
        if st is None or st.t_last is None:
            return
        self.emit(f'{{"e":"end","l":{st.site},"c":{t0 - st.t_last:.6f},"why":"epoch"}}')
        st.t_last = None


def _num(x: float | None) -> str:
    return "null" if x is None else f"{x:.6f}"


def _num_or_null(x: int | None) -> str:
    return "null" if x is None else str(x)


def hello(**extra) -> dict:
    """Who measures, under which Python and torch: the first event once torch is loaded (or
    the last, before "exit", from a script that never imported it: then without torch). CUDA
    is not touched: asking whether it is available would start the driver before the script
    chose its devices (CUDA_VISIBLE_DEVICES set after `import torch` counts until CUDA starts)."""
    import multiprocessing
    import platform
    import sys

    torch = sys.modules.get("torch")
    out = {"e": "hello", "pid": os.getpid(), "python": platform.python_version(),
           "start_method_default": multiprocessing.get_start_method(allow_none=True)
           or multiprocessing.get_context().get_start_method()}
    if torch is not None:
        out["torch"] = getattr(torch, "__version__", None)
        out["cuda_built"] = getattr(getattr(torch, "version", None), "cuda", None) is not None
    return {**out, **extra}


def recorder_from_spec(spec: RunnerSpec, emit: Callable[[str], None], gpu: Any = None) -> Recorder:
    return Recorder(
        emit, steps=int(spec.steps), warmup=int(spec.warmup), max_seconds=spec.max_seconds,
        overrides=spec.overrides or {}, override_site=spec.override_site, stack_dir=spec.stack_dir, gpu=gpu,
        mode=spec.mode, target_site=spec.target_site, drain_seconds=spec.drain_seconds, stage_dir=spec.stage_dir,
        copy_to=spec.copy_to)
