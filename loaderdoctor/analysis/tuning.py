"""Pure: the num_workers sweep's next step and its choice, from measured rates."""

from __future__ import annotations

GAIN = 0.05  # a step that raises throughput by less than this is "no gain"
CLOSE = 0.05  # the choice: the fewest workers within this of the best rate
PAST_CORES = 0.10  # more workers than effective CPUs only for at least this gain
SATURATED = 0.85  # CPUs this busy (fraction) at the best count within the cores: no room past them
COMPUTING = 0.6  # workers computing this share of the time (not waiting on I/O) are CPU-bound


def sweep_cap(effective_cpus: int, max_workers: int | None) -> int:
    """Upper bound for the sweep: I/O-bound loaders scale past the cores, so allow 4x."""
    if max_workers is not None:
        return max_workers
    return max(8, 4 * effective_cpus)


def ladder(cap: int) -> list[int]:
    out, n = [0, 1], 2
    while n <= cap:
        out.append(n)
        n *= 2
    return [x for x in out if x <= cap]


def should_stop(rates: list[tuple[int, float | None]]) -> bool:
    """Stop climbing after two consecutive steps that gained under GAIN (or failed)."""
    flat = 0
    best = None
    for _, r in rates:
        if r is None:
            flat += 1
        elif best is None or r > best * (1 + GAIN):
            best = r if best is None or r > best else best
            flat = 0
        else:
            flat += 1
            best = max(best, r)
    return flat >= 2


def choose(rates: list[tuple[int, float | None]], effective_cpus: int,
           cpu_limited: set[int] | frozenset[int] = frozenset()) -> int | None:
    """The fewest workers within CLOSE of the best measured rate; past the effective CPUs
    only when that beats the best configuration within the cores by PAST_CORES, and only
    when that configuration was not CPU-limited (`cpu_limited`, see cpu_limited()): then
    more workers than CPUs only win CPU time from other processes, the training step's
    among them, or fill gaps a deeper prefetch_factor fills too."""
    ok = [(n, r) for n, r in rates if r]
    if not ok:
        return None
    best = max(r for _, r in ok)
    at = best_within(rates, effective_cpus)
    pool = ok
    if at is not None:
        best_within_rate = dict(ok)[at]
        if best < best_within_rate * (1 + PAST_CORES) or at in cpu_limited:
            pool = [(n, r) for n, r in ok if n <= effective_cpus]
            best = best_within_rate
    return min(n for n, r in pool if r >= best * (1 - CLOSE))


def best_within(rates: list[tuple[int, float | None]], effective_cpus: int) -> int | None:
    """The worker count with the best measured rate among those within the effective CPUs."""
    within = [(n, r) for n, r in rates if r and n <= effective_cpus]
    return max(within, key=lambda nr: nr[1])[0] if within else None


def cpu_limited(load: dict | None) -> str | None:
    """Why a configuration's CPUs had no room for more workers (None when they had): the
    CPUs were saturated, or its workers were computing, not waiting (sampling.window_load)."""
    if not load:
        return None
    if load.get("busy") is not None and load["busy"] >= SATURATED:
        return f"the CPUs were {100 * load['busy']:.0f}% busy"
    share = load.get("worker_cpu_share")
    if share is not None and share >= COMPUTING:
        return f"each worker was computing {100 * share:.0f}% of the time (CPU-bound, not waiting on I/O)"
    return None


def keeps_semantics(loader: dict, settings: dict) -> bool:
    """Would these settings keep what the user wrote? Dropping every worker bypasses their
    worker_init_fn (a vocabulary loaded per worker, a seed, a connection) and an
    IterableDataset's per-worker sharding: the loop would be faster because it no longer does
    the user's work. Worker start-up is fixed with persistent workers instead."""
    if (settings.get("num_workers", loader.get("num_workers")) or 0) == 0 and (loader.get("num_workers") or 0) > 0:
        return not loader.get("worker_init_fn") and "Iterable" not in str(loader.get("dataset") or "")
    return True


def recommended_settings(current: dict, choice: int | None, iterators: int, prefetch: dict | None = None,
                         pin: dict | None = None) -> dict:
    """DataLoader arguments to change, from what was measured: the sweep's choice (never one
    that drops what the user wrote: keeps_semantics), and persistent workers when the
    baseline re-created the iterator (epochs) with workers; pinned memory when the
    pin-memory stage measured cheaper copies to the GPU (orchestrate/experiments.pin_memory)."""
    out: dict = {}
    nw = current.get("num_workers") or 0
    if choice is not None and not keeps_semantics(current, {"num_workers": choice}):
        choice = None
    if choice is not None and choice != nw:
        out["num_workers"] = choice
        nw = choice
    if nw > 0 and not current.get("persistent_workers") and iterators > 1:
        out["persistent_workers"] = True
    if prefetch and prefetch.get("keep") and prefetch.get("num_workers") == nw:
        out["prefetch_factor"] = prefetch["value"]
    if pin and pin.get("keep") and pin.get("num_workers") == nw:
        out["pin_memory"] = True
    return out
