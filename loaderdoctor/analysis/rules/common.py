"""What every rule shares: the thresholds (documented in the README), the Finding record,
and the few formatting helpers findings quote numbers with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

THRESHOLDS = {
    # share of step time spent waiting for data (TensorFlow's analyzer: >= 20% "highly
    # input-bound", >= 5% "moderately"; TraceML warns at 10%, critical at 20%)
    "data_bound_fraction": 0.20,
    "compute_bound_fraction": 0.05,
    # fewer measured steps than this and the baseline verdict is inconclusive
    "min_steps": 5,
    # fewer measured steps than this (or any hang or crash) and no throughput finding is made
    "min_steps_findings": 20,
    # noisy-machine: CPU cores other processes took while a timed stage ran, at least this many
    # and this share of the effective CPUs (the run's own processes are not counted)
    "noise_cores": 0.5,
    "noise_share": 0.25,
    # a confirmed speedup: the low end of its 95% interval over this (analysis/stats.MIN_LO)
    "confirm_min_lo": 1.02,
    # the sweep: a configuration must beat the current one by this much (loader-only rate)
    "workers_gain": 0.10,
    # fewer workers that reach at least this share of the current rate are "as fast"
    "workers_as_fast": 0.95,
    # one transform's share of per-sample time that makes it dominant
    "slow_transform_share": 0.50,
    # collate's share of the workers' fetch time (samples + collate)
    "slow_collate_share": 0.30,
    # worker-startup (paid once): the first batch's wait as a share of the first epoch (that
    # wait plus one epoch of median steps), and at least worker_startup_min_s seconds
    "worker_startup_share": 0.20,
    "worker_startup_min_s": 1.0,
    # epoch-restart: the waits at the first batch of every epoch after the first, summed, as a
    # share of those epochs' time (docs/findings-data.md)
    "epoch_restart_share": 0.10,
    # worker-memory-growth: the workers' private memory (USS) against their age, one line
    # through every reading: at least this slope per worker and this growth over the ages seen
    # when the dataset holds large Python containers (copy-on-read explains it); without them,
    # memory_growth_unexplained_mb (the allocator's warm-up with large tensors grows a worker
    # by tens of MB in a short stage). A projection that reaches the memory limit within an
    # epoch fires whatever the growth seen.
    "memory_growth_mb_s": 1.0,
    "memory_growth_mb": 8.0,
    "memory_growth_unexplained_mb": 64.0,
    # slow-worker: the slowest worker's median fetch over the others' median, and by this many ms
    "slow_worker_ratio": 2.0,
    "slow_worker_min_ms": 5.0,
    # slow-read: the part of a sample's fetch outside the timed transforms and the collate
    "slow_read_share": 0.50,
    # cacheable-prefix: loader-only rate with the deterministic prefix cached over the rate without
    "cache_prefix_gain": 1.20,
    # a confirm run must be at least this much faster for the change to be recommended
    "confirm_min_speedup": 1.05,
    # a SIGKILLed process whose private memory grew this much (MB, and by this factor over
    # its first reading) in the samples was killed for memory, even with no OOM record we can read
    "oom_growth_mb": 256,
    "oom_growth_ratio": 2.0,
    # /dev/shm must hold at least this many times the bytes the workers keep in flight
    "shm_headroom": 2.0,
    # the open-file limit must allow at least this many times the tensors in flight (one
    # descriptor each under the file_descriptor sharing strategy), and at least 1024
    "fd_headroom": 4.0,
    "fd_min": 1024,
    # threads a torch worker has of its own (main, queue feeder, resource sharer, ...): not counted
    "worker_base_threads": 4,
    # the workers' other threads (thread pools) together above this many per effective CPU
    "threads_per_cpu": 2.0,
    # straggler-rank: a rank whose data wait is >= this many times the other ranks' median and
    # >= straggler_wait_s (datapath-doctor's per-rank rule); or whose own work per step exceeds
    # the others' by >= straggler_wait_s and >= straggler_gap_share of the step (ours)
    "straggler_wait_ratio": 2.0,
    "straggler_wait_s": 0.050,
    "straggler_gap_share": 0.10,
    # h2d-bound: the batch's copy to the GPU (the larger of the host's and the GPU's time in it)
    # at least this share of the median step (ours; the pin-memory stage's own limits are in
    # analysis/transfer.py)
    "h2d_share": 0.10,
}


@dataclass
class Finding:
    id: str
    severity: str  # critical | warning | info
    title: str
    evidence: str
    fix: str
    impact: dict | None = None  # {share, ms_per_step, ceiling}: what fixing it can gain at most
    proposes: dict | None = None  # settings it advises (kept out of report.json)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("proposes")
        return d


Rule = Callable[[dict], list[Finding]]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.1f} ms"


def _where(c: dict | None) -> str:
    if not c:
        return "no frame in your own code was found"
    wid = f", worker {c['worker_id']}" if c.get("worker_id") is not None else ""
    pid = f", pid {c['pid']}" if c.get("pid") is not None else ""
    return f"{c.get('function')} at {c.get('file')}:{c.get('line')} ({c.get('role')}{wid}{pid})"


def share_verdict(frac: float) -> str:
    """data-bound, compute-bound or balanced from the step's data-wait share (THRESHOLDS)."""
    if frac >= THRESHOLDS["data_bound_fraction"]:
        return "data-bound"
    if frac < THRESHOLDS["compute_bound_fraction"]:
        return "compute-bound"
    return "balanced"


# Stages that run the user's real training loop. Hangs and crashes of the experiments
# (sweep configurations, start methods, ablation) speak through their own rules and tables.
REAL_RUNS = ("baseline", "confirm", "check")


def _real(items: list[dict] | None) -> list[dict]:
    return [x for x in items or [] if x.get("stage") in REAL_RUNS]


def _mb(x: float) -> str:
    return f"{x / 2**20:.1f} MB"


def _code(settings: dict) -> str:
    return "DataLoader(..., " + ", ".join(f"{k}={v!r}" for k, v in settings.items()) + ")"


def _loader_matters(r: dict) -> bool:
    """A slow part of the pipeline is worth a finding only when the real step waits on data:
    with the data wait under the compute-bound threshold, nothing is gained by speeding it up."""
    b = r.get("baseline") or {}
    frac = b.get("data_wait_fraction")
    return frac is not None and (b.get("steps") or 0) >= THRESHOLDS["min_steps"] \
        and frac >= THRESHOLDS["compute_bound_fraction"]


def _runs(r: dict) -> dict:
    return {row["method"]: row for row in r.get("start_methods") or []}


def _train_loader(r: dict) -> dict | None:
    for l in r.get("loaders") or []:
        if l.get("role") == "train":
            return l
    return None
