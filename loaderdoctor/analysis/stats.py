"""Pure: is a recommended setting really faster? Interleaved A/B runs and their spread.

Why the median and a bootstrap of *paired ratios*: on a shared machine the same run
drifts 10-30% from one minute to the next (other jobs, thermal and frequency changes,
page cache). Comparing two means measured at different times mostly measures that drift.
So the confirm interleaves the current (A) and recommended (B) settings in pairs, in a
randomized but balanced order (plan_pairs), and takes each pair's ratio B/A: drift that
hits both halves of a pair cancels in the ratio. The median of the ratios ignores the one
run another process disturbed, and a percentile bootstrap of that median gives an
interval without assuming the ratios are normal. A change is "confirmed" only when the
interval's low end clears 1.02; otherwise the current settings stand.

Nothing here starts a process or reads a clock; every random draw comes from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MIN_LO = 1.02  # the interval's low end must clear this for "confirmed"
CLOSE = 0.02  # sweep points whose median is within this (or the noise) of the best are "as fast"
MIN_PAIRS = 5  # the confirm runs at least this many A/B pairs


def _valid(x: Any) -> bool:
    """A usable rate: a finite number above zero (None or NaN is a failed run)."""
    try:
        return x is not None and math.isfinite(float(x)) and float(x) > 0
    except (TypeError, ValueError):
        return False


def _boot_median(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Medians of n_boot resamples (with replacement) of values."""
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return np.median(values[idx], axis=1)


def speedup_interval(a_rates: Sequence[float | None], b_rates: Sequence[float | None], *,
                     paired: bool = True, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """The speedup of B (recommended) over A (current) from throughput rates (higher is
    faster), as {"median", "ci": [lo, hi] | None, "repeats", "ratios", "dropped", "level",
    "paired"}.

    paired=True: a_rates[i] and b_rates[i] ran back to back (one interleaved pair); the
    ratios b_i/a_i are bootstrapped (median of each resample). A pair with a failed run
    (None, NaN, <= 0) is dropped and counted in "dropped". paired=False: the two arms are
    resampled independently and the statistic is median(B*)/median(A*); "ratios" are then
    b_i / median(A). "ci" is None with fewer than 2 usable repeats; "median" is None with none.
    """
    a, b = list(a_rates), list(b_rates)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired runs need as many A as B rates ({len(a)} != {len(b)})")
        keep = [(x, y) for x, y in zip(a, b) if _valid(x) and _valid(y)]
        dropped = len(a) - len(keep)
        av = np.array([x for x, _ in keep], dtype=float)
        bv = np.array([y for _, y in keep], dtype=float)
        ratios = bv / av if keep else np.array([])
        n = len(ratios)
    else:
        av = np.array([x for x in a if _valid(x)], dtype=float)
        bv = np.array([y for y in b if _valid(y)], dtype=float)
        dropped = (len(a) - len(av)) + (len(b) - len(bv))
        ratios = bv / np.median(av) if len(av) and len(bv) else np.array([])
        n = min(len(av), len(bv))
    out = {"median": None, "ci": None, "repeats": n, "ratios": [round(float(r), 4) for r in ratios],
           "dropped": dropped, "level": level, "paired": paired}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    if paired:
        out["median"] = float(np.median(ratios))
        boot = _boot_median(ratios, rng, n_boot) if n >= 2 else None
    else:
        out["median"] = float(np.median(bv) / np.median(av))
        boot = (_boot_median(bv, rng, n_boot) / _boot_median(av, rng, n_boot)) if n >= 2 else None
    if boot is not None:
        tail = (1 - level) / 2
        lo, hi = np.quantile(boot, [tail, 1 - tail])
        out["ci"] = [round(float(lo), 4), round(float(hi), 4)]
    out["median"] = round(out["median"], 4)
    return out


def verdict(interval: dict | None, *, min_lo: float = MIN_LO) -> str:
    """"confirmed" when the interval's low end is above min_lo, "slower" when its high end is
    below 1/min_lo, "within-noise" otherwise; "not-measured" without an interval."""
    if not interval or not interval.get("ci"):
        return "not-measured"
    lo, hi = interval["ci"]
    if lo > min_lo:
        return "confirmed"
    if hi < 1 / min_lo:
        return "slower"
    return "within-noise"


def recommendation_fields(interval: dict | None, *, min_lo: float = MIN_LO) -> dict:
    """The confirm's part of report.json's `recommendation`: measured_speedup, speedup_ci,
    repeats, status. CONTRACT.md's status has no "slower": a slower change is
    "within-noise" there (the current settings stand either way)."""
    v = verdict(interval, min_lo=min_lo)
    interval = interval or {}
    return {"measured_speedup": interval.get("median"), "speedup_ci": interval.get("ci"),
            "repeats": interval.get("repeats", 0),
            "status": "within-noise" if v == "slower" else v}


def spread(rates: Sequence[float | None]) -> dict:
    """A sweep point measured more than once: {"median", "iqr": [q1, q3], "cv", "n"} over
    the usable rates; cv (std/mean) is None with fewer than 2, everything None with none."""
    v = np.array([r for r in rates if _valid(r)], dtype=float)
    if len(v) == 0:
        return {"median": None, "iqr": None, "cv": None, "n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    cv = float(np.std(v, ddof=1) / np.mean(v)) if len(v) >= 2 else None
    return {"median": float(med), "iqr": [float(q1), float(q3)],
            "cv": None if cv is None else round(cv, 4), "n": len(v)}


def default_cost(config: dict) -> tuple:
    """Fewest workers first, then the least memory in flight (workers x prefetch), then no
    persistent workers, then no pinned memory."""
    nw = config.get("num_workers") or 0
    pf = config.get("prefetch_factor") or (2 if nw else 0)
    return (nw, nw * pf, bool(config.get("persistent_workers")), bool(config.get("pin_memory")))


def cheapest_within_noise(points: Sequence[dict], key_cost: Callable[[dict], Any] = default_cost, *,
                          close: float = CLOSE, seed: int = 0) -> dict | None:
    """Among sweep points [{"config": {...}, "rates": [...]}, ...] the cheapest one
    (lowest key_cost(config)) that is within noise of the fastest: the bootstrap interval
    of its rate over the best's includes 1, or its median is within max(close, the noise)
    of the best's, the noise being the larger cv of the two points. Ties in cost go to
    the faster point. Returns that point (the dict given), None when none has a rate."""
    measured = [(p, spread(p.get("rates") or [])) for p in points]
    measured = [(p, s) for p, s in measured if s["median"] is not None]
    if not measured:
        return None
    best, best_s = max(measured, key=lambda ps: ps[1]["median"])
    within = []
    for p, s in measured:
        if p is best:
            within.append((p, s))
            continue
        iv = speedup_interval(best["rates"], p["rates"], paired=False, seed=seed)
        noise = max([close] + [x["cv"] for x in (s, best_s) if x["cv"] is not None])
        in_ci = iv["ci"] is not None and iv["ci"][0] <= 1 <= iv["ci"][1]
        if in_ci or s["median"] >= best_s["median"] * (1 - noise):
            within.append((p, s))
    return min(within, key=lambda ps: (key_cost(ps[0]["config"]), -ps[1]["median"]))[0]


def plan_pairs(n: int, seed: int = 0) -> list[str]:
    """The order of n interleaved pairs, "AB" or "BA" each: balanced (as many of each, one
    extra at random when n is odd) and shuffled with the seed, so a drift of the machine
    through the confirm favours neither arm."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = np.random.default_rng(seed)
    order = ["AB", "BA"] * (n // 2) + ([str(rng.choice(["AB", "BA"]))] if n % 2 else [])
    return [order[i] for i in rng.permutation(len(order))]


def pairs_in_budget(budget_s: float, run_s: float, *, maximum: int = 10) -> int:
    """How many A/B pairs (two runs each of about run_s seconds) fit in budget_s, at most
    `maximum`; under MIN_PAIRS when the budget is too small (the caller reports that)."""
    if run_s <= 0:
        return maximum
    return max(0, min(maximum, math.floor(budget_s / (2 * run_s))))
