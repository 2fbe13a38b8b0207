"""The dataset's transform pipeline: find it, ablate it by prefixes, time each transform.

Runs inside the runner (main process) and, through a chained worker_init_fn, inside each
DataLoader worker. Transforms are timed by wrapping their *class's* __call__ for the
duration of the probe, so the objects themselves are untouched: isinstance checks, the
library's own dispatch (MONAI's apply_transform and map_items, torchvision v2's
nn.Module) and random state see exactly what they would without loaderdoctor. Plain
functions in a list (they have no class of their own to patch) are wrapped in place.
"""

from __future__ import annotations

import json
import os
import time
import types
from typing import Any

from loaderdoctor.child import cacheprefix, readsampler

_ATTRS = ("transform", "transforms", "transform_fn", "preprocess")
_WRAPPERS = ("dataset", "datasets", "base_dataset", "data_source")


# ---------------------------------------------------------------- finding it


class Pipeline:
    """A located pipeline: the Compose-like object (or the holder of a plain list)."""

    def __init__(self, owner: Any, attr: str, steps: list, kind: str, path: str):
        self.owner = owner  # the object whose `attr` is the step sequence
        self.attr = attr
        self.full = list(steps)
        self.kind = kind
        self.path = path
        self._seq_type = type(getattr(owner, attr))

    def names(self) -> list[str]:
        return [step_name(t) for t in self.full]

    def set_steps(self, steps: list) -> None:
        setattr(self.owner, self.attr, steps if self._seq_type is list else self._seq_type(steps))


def step_name(t: Any) -> str:
    if isinstance(t, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return getattr(t, "__qualname__", getattr(t, "__name__", repr(t)))
    return type(t).__name__


def _is_steps(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(callable(x) for x in v)


def find_pipeline(dataset: Any, max_depth: int = 4) -> tuple[Pipeline | None, str]:
    """Look for the transform pipeline on the dataset and through wrappers (Subset,
    ConcatDataset, anything holding `.dataset`). Returns (pipeline, "") or (None, reason)."""
    seen: set[int] = set()
    queue: list[tuple[Any, str, int]] = [(dataset, "dataset", 0)]
    singles: list[str] = []
    while queue:
        obj, path, depth = queue.pop(0)
        if id(obj) in seen or depth > max_depth:
            continue
        seen.add(id(obj))
        for attr in _ATTRS:
            v = getattr(obj, attr, None) if not isinstance(obj, (list, tuple)) else None
            if v is None:
                continue
            inner = getattr(v, "transforms", None)
            if _is_steps(inner):
                return Pipeline(v, "transforms", list(inner), type(v).__name__, f"{path}.{attr}.transforms"), ""
            if _is_steps(v):
                return Pipeline(obj, attr, list(v), "list", f"{path}.{attr}"), ""
            inner_t = getattr(v, "transform", None)  # torchvision's StandardTransform
            if inner_t is not None and _is_steps(getattr(inner_t, "transforms", None)):
                return (Pipeline(inner_t, "transforms", list(inner_t.transforms), type(inner_t).__name__,
                                 f"{path}.{attr}.transform.transforms"), "")
            if callable(v):
                singles.append(f"{path}.{attr} ({step_name(v)})")
        for w in _WRAPPERS:
            v = getattr(obj, w, None) if not isinstance(obj, (list, tuple)) else None
            if v is None:
                continue
            if isinstance(v, (list, tuple)):
                for k, item in enumerate(v[:8]):
                    queue.append((item, f"{path}.{w}[{k}]", depth + 1))
            else:
                queue.append((v, f"{path}.{w}", depth + 1))
    if singles:
        return None, (f"the dataset's transform is a single callable ({singles[0]}), not a sequence of steps, so "
                      "it cannot be split")
    return None, (f"no transform pipeline was found on {type(dataset).__name__} (looked for "
                  f"{', '.join(_ATTRS)} on it and on wrapped datasets)")


# ---------------------------------------------------------------- timing (any process)


class _Stats:
    def __init__(self, n: int, out_dir: str):
        self.n = n
        self.out_dir = out_dir
        self.total = [0.0] * n
        self.calls = [0] * n
        self.fetch_s = 0.0
        self.collate_s = 0.0
        self.samples = 0
        self.batches = 0

    def flush(self) -> None:
        path = os.path.join(self.out_dir, f"tstats-{os.getpid()}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "total": self.total, "calls": self.calls, "fetch_s": self.fetch_s,
                       "collate_s": self.collate_s, "samples": self.samples, "batches": self.batches,
                       "read_frames": readsampler.top()}, f)
        os.replace(tmp, path)


_STATS: _Stats | None = None
_NAMES: list[str] = []  # the timed pipeline's step names (child/workerevents.py names the slowest)
_POSITIONS: dict[int, int] = {}  # id(transform instance) -> position
_PATCHED_CLASSES: dict[type, Any] = {}


def _timed_call(orig):
    def __call__(self, *args, **kwargs):
        pos = _POSITIONS.get(id(self))
        if pos is None or _STATS is None:
            return orig(self, *args, **kwargs)
        t0 = time.perf_counter()
        try:
            return orig(self, *args, **kwargs)
        finally:
            _STATS.total[pos] += time.perf_counter() - t0
            _STATS.calls[pos] += 1

    __call__._ld_orig = orig
    return __call__


class TimedFunction:
    """Wraps a plain function step (it has no class of its own to patch)."""

    def __init__(self, fn, pos: int):
        self.fn = fn
        self.pos = pos

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            if _STATS is not None:
                _STATS.total[self.pos] += time.perf_counter() - t0
                _STATS.calls[self.pos] += 1


class TimedCollate:
    """collate_fn wrapper: time spent collating, apart from the samples."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, batch):
        t0 = time.perf_counter()
        try:
            return self.fn(batch)
        finally:
            if _STATS is not None:
                _STATS.collate_s += time.perf_counter() - t0


def _patch_fetchers() -> None:
    from torch.utils.data._utils import fetch as fetch_mod

    for name in ("_MapDatasetFetcher", "_IterableDatasetFetcher"):
        cls = getattr(fetch_mod, name, None)
        if cls is None or getattr(cls.fetch, "_ld_orig", None) is not None:
            continue
        orig = cls.fetch

        def fetch(self, possibly_batched_index, _orig=orig):
            t0 = time.perf_counter()
            try:
                return _orig(self, possibly_batched_index)
            finally:
                if _STATS is not None:
                    _STATS.fetch_s += time.perf_counter() - t0
                    _STATS.batches += 1
                    _STATS.samples += len(possibly_batched_index) if hasattr(possibly_batched_index, "__len__") else 1
                    _STATS.flush()

        fetch._ld_orig = orig
        cls.fetch = fetch


def install_timing(pipe: Pipeline | None, out_dir: str) -> None:
    """Time every step of `pipe` (if any), fetches and collate in this process; results go
    to out_dir/tstats-<pid>.json."""
    global _STATS
    _STATS = _Stats(len(pipe.full) if pipe else 0, out_dir)
    _NAMES[:] = pipe.names() if pipe else []
    readsampler.start(__file__)  # where the rest of __getitem__ (reading, decoding) spends its time
    if pipe is None:
        _patch_fetchers()
        return
    steps = list(pipe.full)
    for pos, t in enumerate(steps):
        if isinstance(t, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.LambdaType)):
            steps[pos] = TimedFunction(t, pos)
            continue
        cls = type(t)
        if cls not in _PATCHED_CLASSES:
            _PATCHED_CLASSES[cls] = cls.__dict__.get("__call__")
            cls.__call__ = _timed_call(cls.__call__)
        _POSITIONS[id(t)] = pos
    if any(isinstance(s, TimedFunction) for s in steps):
        pipe.set_steps(steps)
    _patch_fetchers()


def uninstall_timing() -> None:
    global _STATS
    for cls, orig in _PATCHED_CLASSES.items():
        if orig is None:
            delattr(cls, "__call__")
        else:
            cls.__call__ = orig
    _PATCHED_CLASSES.clear()
    _POSITIONS.clear()
    _STATS = None


class TimingWorkerInit:
    """Chained worker_init_fn: find the pipeline in this worker's dataset copy and time it."""

    def __init__(self, inner, out_dir: str):
        self.inner = inner
        self.out_dir = out_dir

    def __call__(self, worker_id: int) -> None:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        pipe, _ = find_pipeline(info.dataset) if info is not None else (None, "")
        install_timing(pipe, self.out_dir)
        if self.inner is not None:
            self.inner(worker_id)


def identity(*args, **kwargs):
    """Prefix 0 (loading only): some Compose classes cannot run an empty list
    (torchvision v2 raises UnboundLocalError), so the empty prefix holds this one step. It
    passes through what it is given, positionally (torchvision, MONAI) or as keywords
    (albumentations calls each step as t(**data) and expects the dict back)."""
    if args:
        return args[0] if len(args) == 1 and not kwargs else args
    return kwargs


def list_collate(batch):
    """Collate for prefix ablation: a partial pipeline's samples need not be collatable."""
    return batch


# ---------------------------------------------------------------- the stage (runner side)


def run_transforms_stage(rec, loader) -> None:
    """Prefix ablation (k = 0..n transforms) with the user's workers and start method,
    then the full pipeline with every step timed. Ends the script with StopProbe."""
    rec.busy = True
    emit = rec.emit
    pipe, reason = find_pipeline(loader.dataset)
    if pipe is None:  # no steps to ablate; samples and collate are still timed
        emit(json.dumps({"e": "pipeline", "found": False, "reason": reason}))
        _timed_drain(rec, loader, None, loader.collate_fn)
    names = pipe.names()
    emit(json.dumps({"e": "pipeline", "found": True, "kind": pipe.kind, "path": pipe.path, "names": names}))
    orig_collate = loader.collate_fn
    per_prefix = max(2, min(rec.steps, 4))
    ablation: dict[int, float] = {}  # prefix length -> seconds for per_prefix batches
    # the ablation's own batches are not measured steps: no stop until the timed run
    steps, max_seconds = rec.steps, rec.max_seconds
    rec.steps, rec.max_seconds = 10**12, None
    try:
        for k in range(len(names) + 1):
            pipe.set_steps(pipe.full[:k] if k else [identity])
            loader.collate_fn = list_collate
            emit(json.dumps({"e": "prefix", "k": k, "phase": "start"}))
            t0 = time.perf_counter()
            n = 0
            try:
                for _batch in loader:
                    n += 1
                    if n >= per_prefix:
                        break
            except Exception as exc:  # this prefix fails: the step it added is the culprit
                emit(json.dumps({"e": "prefix", "k": k, "phase": "error", "type": type(exc).__name__,
                                 "message": str(exc)[:2000]}))
                rec.finish("steps")
            ablation[k] = time.perf_counter() - t0
            emit(json.dumps({"e": "prefix", "k": k, "phase": "ok", "batches": n, "seconds": round(ablation[k], 4)}))
        if loader.num_workers == 0:  # the empty prefix read first, from a cold cache: time it again (cacheprefix.bound)
            ablation[0] = min(ablation[0], _time_prefix(loader, pipe, [identity], per_prefix))
    finally:
        pipe.set_steps(pipe.full)
        loader.collate_fn = orig_collate
        rec.steps, rec.max_seconds = steps, max_seconds
    cacheprefix.what_if(rec, loader, pipe, ablation)  # the deterministic prefix cached: measured, briefly
    _timed_drain(rec, loader, pipe, orig_collate)


def _time_prefix(loader, pipe: Pipeline, steps: list, batches: int) -> float:
    """Seconds for `batches` batches with these steps (infinity if they fail)."""
    pipe.set_steps(steps)
    t0 = time.perf_counter()
    try:
        for n, _batch in enumerate(loader, start=1):
            if n >= batches:
                break
    except Exception:
        return float("inf")
    return time.perf_counter() - t0


def _timed_drain(rec, loader, pipe: Pipeline | None, orig_collate) -> None:
    """The full pipeline, timed where it runs (the workers, or here with num_workers=0)."""
    out_dir = rec.stage_dir or "."
    loader.collate_fn = TimedCollate(orig_collate)
    if loader.num_workers > 0:
        loader.worker_init_fn = TimingWorkerInit(loader.worker_init_fn, out_dir)
    else:
        install_timing(pipe, out_dir)
    rec.emit(json.dumps({"e": "timing", "phase": "start"}))
    rec.measured = {}
    rec.batches = {}
    rec.drain(loader)
