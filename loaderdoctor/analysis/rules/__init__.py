"""Pure rules: the assembled measurements -> verdict, findings, recommendation.

Every rule is a small function of the report-in-progress (a dict with the measured blocks
of CONTRACT.md: baseline, stages, hangs, crashes, workers_sweep, ...) returning zero or
more findings, one module per family. No rule touches a process or a file; each finding
quotes numbers from this run. Thresholds live in common.THRESHOLDS (README: How it decides)."""

from __future__ import annotations

from loaderdoctor.analysis.rules import weigh
from loaderdoctor.analysis.rules.common import (
    THRESHOLDS,
    Finding,
    Rule,
    _real,
    _train_loader,
    share_verdict,
)
from loaderdoctor.analysis.rules.completeness import rule_probe_incomplete
from loaderdoctor.analysis.rules.context import (
    rule_cuda_before_fork,
    rule_fork_unsafe,
    rule_notebook_only,
    rule_spawn_unsafe,
)
from loaderdoctor.analysis.rules.distributed import (
    rule_straggler_rank,
    rule_uneven_shards,
)
from loaderdoctor.analysis.rules.failures import rule_crashes, rule_hang
from loaderdoctor.analysis.rules.memory import rule_worker_memory_growth
from loaderdoctor.analysis.rules.pipeline import rule_slow_collate, rule_slow_transform
from loaderdoctor.analysis.rules.reading import rule_cacheable_prefix, rule_slow_read
from loaderdoctor.analysis.rules.resources import (
    rule_fd_limit,
    rule_noisy_machine,
    rule_shm_small,
    rule_thread_oversubscription,
)
from loaderdoctor.analysis.rules.startup import rule_epoch_restart, rule_worker_startup
from loaderdoctor.analysis.rules.throughput import (
    rule_data_or_compute_bound,
    rule_workers,
)
from loaderdoctor.analysis.rules.transfer import rule_h2d_bound, rule_pin_memory
from loaderdoctor.analysis.rules.workers import (
    rule_idle_workers,
    rule_iterable_duplicates,
    rule_slow_worker,
)
from loaderdoctor.analysis.tuning import keeps_semantics

__all__ = ["THRESHOLDS", "Finding", "RULES", "diagnose", "recommendation", "verdict"]


RULES: list[Rule] = [rule_hang, rule_crashes, rule_data_or_compute_bound, rule_workers, rule_slow_transform,
                     rule_slow_collate, rule_worker_startup, rule_fork_unsafe, rule_spawn_unsafe, rule_shm_small,
                     rule_fd_limit, rule_cuda_before_fork, rule_thread_oversubscription, rule_notebook_only,
                     rule_probe_incomplete, rule_noisy_machine, rule_epoch_restart, rule_worker_memory_growth,
                     rule_iterable_duplicates, rule_idle_workers, rule_slow_worker, rule_slow_read,
                     rule_cacheable_prefix, rule_h2d_bound, rule_pin_memory,
                     rule_straggler_rank, rule_uneven_shards]


def verdict(r: dict) -> str:
    if _real(r.get("hangs")):
        return "hang"
    if _real(r.get("crashes")):
        return "crash"
    b = r.get("baseline") or {}
    frac = b.get("gpu_idle_fraction", b.get("data_wait_fraction"))  # on CUDA: the GPU's idle share
    if frac is None or (b.get("steps") or 0) < THRESHOLDS["min_steps"]:
        return "inconclusive"
    return share_verdict(frac)


def recommendation(r: dict, best: dict | None = None) -> dict:
    """The loader settings to use: the confirmed candidate when its interval clears the noise;
    a cheaper candidate (fewer workers) that is as fast within noise; else the current
    settings unchanged, never a guessed improvement. Status: confirmed, within-noise or
    not-measured, with the confirm's median speedup, its 95% interval and the pairs run."""
    loader = _train_loader(r) or {}
    rec = {
        "num_workers": loader.get("num_workers"),
        "pin_memory": loader.get("pin_memory"),
        "persistent_workers": loader.get("persistent_workers"),
        "prefetch_factor": loader.get("prefetch_factor"),
        "multiprocessing_context": loader.get("start_method"),
        "measured_speedup": None, "speedup_ci": None, "repeats": 0, "status": "not-measured",
        "basis": "current settings (no stage measured a better configuration)",
    }
    c = r.get("confirm") or {}
    if not best:
        return rec
    if c.get("speedup") is None:
        rec["basis"] = f"not confirmed (confirm run: {c.get('status')}); current settings kept"
        return rec
    rec.update(measured_speedup=c["speedup"], speedup_ci=c.get("speedup_ci"), repeats=c.get("repeats", 0))
    ci = c.get("speedup_ci")
    span = f"{c['speedup']:.2f}x (95% interval {ci[0]:.2f}-{ci[1]:.2f}, {c['repeats']} interleaved pairs)" if ci \
        else f"{c['speedup']:.2f}x from {c.get('repeats', 0)} pair (no interval: too few repeats)"
    if c.get("verdict") == "confirmed":
        rec.update({k: v for k, v in best.items() if k in rec})
        rec["status"] = "confirmed"
        rec["basis"] = f"confirmed on the real training script: {span}"
        return rec
    rec["status"] = "within-noise" if ci else "not-measured"
    cheaper = (best.get("num_workers") or 0) < (loader.get("num_workers") or 0) and keeps_semantics(loader, best)
    if cheaper and c.get("verdict") == "within-noise":
        rec.update({k: v for k, v in best.items() if k in rec})
        rec["basis"] = f"as fast within noise and cheaper (fewer worker processes): {span}"
    else:
        rec["basis"] = f"{c['settings']} measured {span}: not faster beyond the noise, the current settings stand"
    return rec


def diagnose(r: dict, rules: list[Rule] | None = None, best: dict | None = None) -> tuple[str, list[dict], dict]:
    """Verdict, findings (weighed by impact and ordered) and recommendation; `best` is the
    confirmed candidate's full settings (the current loader's, with the confirm run's
    changes), when there was one. The recommendation is decided first, so that the rules tell
    its story (rules.weigh drops what it rejects)."""
    rec = recommendation(r, best)
    v = verdict(r)
    found: list[Finding] = []
    for rule in rules or RULES:
        found.extend(rule(dict(r, recommendation=rec, verdict=v)))
    return v, weigh.finalize(found, r, v, rec), rec
