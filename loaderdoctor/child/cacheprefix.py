"""cacheable-prefix: the deterministic prefix of the transform pipeline, and a short measured
what-if in the transforms stage: the loader's rate with that prefix's output cached in memory.

Deterministic is a heuristic, said as such in the report: a step is taken as random when a
class in its MRO has "Rand" in its name (Random*, Rand*, Randomizable), when it has a
probability attribute `p` strictly between 0 and 1, or when its own methods (not torch's
nn.Module) name random state (random, rand, randint, uniform_, normal_, randperm, ...). The
prefix ends at the first such step.

The what-if (fork workers or num_workers=0; an IterableDataset has no index to cache by):
the dataset's __getitem__ is pointed, for the measurement only, at N indices (idx % N); the
prefix's outputs for those N samples are computed once here, keyed by (index, call ordinal
within __getitem__); then the same loader is drained twice for a few batches: the full
pipeline, and the pipeline whose prefix is a lookup in that cache (forked workers inherit
it). Everything patched is restored; the recorder's step limits are lifted meanwhile, as in
the prefix ablation."""

from __future__ import annotations

import json
import re
import time
import types
from typing import Any

FILL_S = 1.5  # at most this long computing the prefix for the cached samples
DRAIN_S = 1.0  # each of the two drains, after its first batch
MAX_SAMPLES = 256
# Caching a prefix removes at most its own cost: when the prefix ablation (num_workers=0, so
# its timings are the pipeline's alone) puts the prefix under this share of the transforms'
# time, caching it can gain at most 1/(1 - share) < 1.11x, under the 1.2x the finding needs
# (analysis/rules/common.THRESHOLDS cache_prefix_gain): the what-if is not run.
BOUND_SHARE = 0.10
RANDOM_CLASS = re.compile(r"Rand")
RANDOM_CODE = {"random", "rand", "randn", "randint", "randperm", "randrange", "uniform", "uniform_", "normal_",
               "bernoulli", "bernoulli_", "choice", "choices", "shuffle", "random_", "multinomial", "default_rng",
               "RandomState", "randomize", "poisson", "exponential_", "randint_like", "rand_like", "randn_like"}

_KEY = [0, 0]  # (index, ordinal of the pipeline call within this __getitem__)


def _code_names(code: types.CodeType, depth: int = 0) -> set[str]:
    names = set(code.co_names)
    if depth < 3:
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                names |= _code_names(c, depth + 1)
    return names


def randomness(step: Any) -> str | None:
    """Why a step looks random, or None when it looks deterministic (heuristic)."""
    if isinstance(step, (types.FunctionType, types.MethodType)):
        fn = getattr(step, "__func__", step)
        used = _code_names(fn.__code__) & RANDOM_CODE
        return f"its code uses {sorted(used)[0]}" if used else None
    cls = type(step)
    for c in cls.__mro__:
        if RANDOM_CLASS.search(c.__name__):
            return f"{c.__name__} is a random transform (by its name)"
    p = getattr(step, "p", None)
    if isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p < 1:
        return f"it applies with probability p={p}"
    for c in cls.__mro__:
        if c is object or c.__module__.startswith(("torch.nn.", "builtins")):
            continue
        for v in vars(c).values():
            fn = getattr(v, "__func__", v)
            if isinstance(fn, types.FunctionType):
                used = _code_names(fn.__code__) & RANDOM_CODE
                if used:
                    return f"{c.__name__}.{fn.__name__} uses {sorted(used)[0]}"
    return None


def deterministic_prefix(steps: list, names: list[str]) -> tuple[int, str | None]:
    """(length of the deterministic prefix, why it ends there or None)."""
    for k, step in enumerate(steps):
        why = randomness(step)
        if why:
            return k, f"{names[k]}: {why}"
    return len(steps), None


class _Prefix:
    """Stands for the prefix in the pipeline: fills the cache, or serves from it."""

    def __init__(self, steps: list, cache: dict, fill: bool):
        self.steps, self.cache, self.fill = steps, cache, fill

    def __call__(self, x):
        key = (_KEY[0], _KEY[1])
        _KEY[1] += 1
        if not self.fill and key in self.cache:
            return self.cache[key]
        for s in self.steps:
            x = s(x)
        if self.fill:
            self.cache[key] = x
        return x


def _point_at(cls: type, n: int):
    """Patch cls.__getitem__ to serve idx % n and to set the cache key; returns the restore."""
    had = "__getitem__" in cls.__dict__
    orig_own = cls.__dict__.get("__getitem__")
    orig = cls.__getitem__

    def __getitem__(self, idx):
        _KEY[0], _KEY[1] = idx % n, 0
        return orig(self, idx % n)

    cls.__getitem__ = __getitem__

    def restore() -> None:
        if had:
            cls.__getitem__ = orig_own
        else:
            del cls.__getitem__

    return restore


def _rate(loader, warm: int) -> dict:
    """samples/s from batch `warm` on (the prefetched burst after the first batch is left
    out), for at most DRAIN_S after the first batch."""
    times, sizes = [], []
    t_first = None
    for batch in loader:
        now = time.perf_counter()
        t_first = t_first or now
        times.append(now)
        sizes.append(_samples(batch))
        if now - t_first > DRAIN_S and len(times) > warm + 3:
            break
    start = warm if len(times) > warm + 3 else 1
    if len(times) <= start:
        return {"samples_per_s": None, "batches": len(times)}
    span = times[-1] - times[start - 1]
    n = sum(sizes[start:])
    return {"samples_per_s": round(n / span, 3) if span > 0 else None, "batches": len(times) - start}


def _samples(batch: Any) -> int:
    for _ in range(6):
        shape = getattr(batch, "shape", None)
        if shape is not None:
            return int(shape[0]) if len(shape) else 1
        if isinstance(batch, (list, tuple)) and batch:
            batch = batch[0]
        elif isinstance(batch, dict) and batch:
            batch = next(iter(batch.values()))
        else:
            return 1
    return 1


def _why_not(loader) -> str | None:
    from torch.utils.data import IterableDataset

    if isinstance(loader.dataset, IterableDataset):
        return "an IterableDataset has no index to cache by"
    if hasattr(type(loader.dataset), "__getitems__"):
        return "the dataset fetches whole batches (__getitems__)"
    if loader.num_workers > 0:
        ctx = loader.multiprocessing_context
        import multiprocessing

        method = ctx.get_start_method() if ctx is not None and hasattr(ctx, "get_start_method") else \
            (multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_context().get_start_method())
        if method != "fork":
            return f"its workers start with {method}: the cache would not reach them (measured with fork only)"
    return None


def _fill(dataset, pipe, k: int, cache: dict, want: int) -> tuple[int, float]:
    pipe.set_steps([_Prefix(pipe.full[:k], cache, fill=True), *pipe.full[k:]])
    t0 = time.perf_counter()
    n = 0
    while n < want and time.perf_counter() - t0 < FILL_S:
        _KEY[0], _KEY[1] = n, 0
        dataset[n]
        n += 1
    return n, time.perf_counter() - t0


def bound(ablation: dict[int, float], k: int, n: int) -> float | None:
    """The prefix's share of the transforms' time from the prefix ablation's seconds per
    prefix length (the same number of batches each): (t_k - t_0) / (t_n - t_0); None when
    the ablation cannot say (a prefix missing, or no transform time to speak of)."""
    t0, tk, tn = ablation.get(0), ablation.get(k), ablation.get(n)
    if t0 is None or tk is None or tn is None or tn - t0 <= 0:
        return None
    return max(0.0, tk - t0) / (tn - t0)


def what_if(rec, loader, pipe, ablation: dict[int, float] | None = None) -> None:
    """Emit a "cache_whatif" event: the prefix, and (when measurable) both rates."""
    if pipe is None:
        return
    names = pipe.names()
    k, stopped = deterministic_prefix(pipe.full, names)
    ev: dict = {"e": "cache_whatif", "prefix": names[:k], "steps": len(names), "stopped_at": stopped,
                "heuristic": "deterministic = no Rand in the class names, no probability p, no random state "
                             "named in its methods"}
    why = "no deterministic prefix" if k == 0 else _why_not(loader)
    share = bound(ablation or {}, k, len(names)) if k and loader.num_workers == 0 else None
    if why is None and share is not None and share < BOUND_SHARE:
        why = (f"the prefix took {100 * share:.1f}% of the transforms' time in the prefix ablation: caching it "
               f"can gain at most {1 / (1 - share):.2f}x")
    if why:
        rec.emit(json.dumps({**ev, "status": "not-measured", "why": why}))
        return
    saved = rec.steps, rec.max_seconds
    rec.steps, rec.max_seconds = 10**12, None
    cls = type(loader.dataset)
    nw = loader.num_workers
    want = min(len(loader.dataset), MAX_SAMPLES, max(4, (loader.batch_size or 1) * max(2, 3 * nw)))
    restore = None
    try:
        cache: dict = {}
        n, fill_s = _fill(loader.dataset, pipe, k, cache, want)
        if n < max(2, loader.batch_size or 1):
            rec.emit(json.dumps({**ev, "status": "not-measured", "why": f"only {n} samples were computed in "
                                 f"{FILL_S:g} s: too slow for a short what-if"}))
            return
        restore = _point_at(cls, n)
        warm = nw * (loader.prefetch_factor or 2) if nw else 1
        pipe.set_steps(list(pipe.full))
        full = _rate(loader, warm)
        pipe.set_steps([_Prefix(pipe.full[:k], cache, fill=False), *pipe.full[k:]])
        cached = _rate(loader, warm)
        rec.emit(json.dumps({**ev, "status": "ok", "samples": n, "fill_s": round(fill_s, 4),
                             "fill_ms_per_sample": round(1000 * fill_s / n, 4), "uncached": full, "cached": cached}))
    except Exception as exc:  # the what-if must never cost the stage
        rec.emit(json.dumps({**ev, "status": "failed", "why": f"{type(exc).__name__}: {exc}"[:500]}))
    finally:
        if restore is not None:
            restore()
        pipe.set_steps(pipe.full)
        rec.steps, rec.max_seconds = saved
