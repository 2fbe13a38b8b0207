"""Pure rules: the assembled measurements -> verdict, findings, recommendation.

Every rule is a small function of the report-in-progress (a dict with the measured blocks
of CONTRACT.md: baseline, stages, hangs, crashes, workers_sweep, ...) returning zero or
more findings, one module per family. No rule touches a process or a file; each finding
quotes numbers from this run. Thresholds live in common.THRESHOLDS (README: How it decides)."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import (
    THRESHOLDS,
    Finding,
    Rule,
    _real,
    _train_loader,
)
from loaderdoctor.analysis.rules.completeness import rule_probe_incomplete
from loaderdoctor.analysis.rules.context import (
    rule_cuda_before_fork,
    rule_fork_unsafe,
    rule_notebook_only,
    rule_spawn_unsafe,
)
from loaderdoctor.analysis.rules.failures import rule_crashes, rule_hang
from loaderdoctor.analysis.rules.pipeline import rule_slow_collate, rule_slow_transform
from loaderdoctor.analysis.rules.resources import (
    rule_fd_limit,
    rule_shm_small,
    rule_thread_oversubscription,
)
from loaderdoctor.analysis.rules.throughput import (
    _confirmed_faster,
    rule_data_or_compute_bound,
    rule_worker_startup,
    rule_workers,
)

__all__ = ["THRESHOLDS", "Finding", "RULES", "diagnose", "recommendation", "verdict"]


RULES: list[Rule] = [rule_hang, rule_crashes, rule_data_or_compute_bound, rule_workers, rule_slow_transform,
                     rule_slow_collate, rule_worker_startup, rule_fork_unsafe, rule_spawn_unsafe, rule_shm_small,
                     rule_fd_limit, rule_cuda_before_fork, rule_thread_oversubscription, rule_notebook_only,
                     rule_probe_incomplete]


def verdict(r: dict) -> str:
    if _real(r.get("hangs")):
        return "hang"
    if _real(r.get("crashes")):
        return "crash"
    b = r.get("baseline") or {}
    frac = b.get("data_wait_fraction")
    if frac is None or (b.get("steps") or 0) < THRESHOLDS["min_steps"]:
        return "inconclusive"
    if frac >= THRESHOLDS["data_bound_fraction"]:
        return "data-bound"
    if frac < THRESHOLDS["compute_bound_fraction"]:
        return "compute-bound"
    return "balanced"


def recommendation(r: dict, best: dict | None = None) -> dict:
    """The loader settings to use: the measured best where a stage measured one, else the
    current settings unchanged (never a guessed improvement)."""
    loader = _train_loader(r) or {}
    rec = {
        "num_workers": loader.get("num_workers"),
        "pin_memory": loader.get("pin_memory"),
        "persistent_workers": loader.get("persistent_workers"),
        "prefetch_factor": loader.get("prefetch_factor"),
        "multiprocessing_context": loader.get("start_method"),
        "measured_speedup": None,
        "basis": "current settings (no stage measured a better configuration)",
    }
    confirm = r.get("confirm") or {}
    faster = _confirmed_faster(r)
    if best and faster:
        rec.update({k: v for k, v in best.items() if k in rec})
        rec["measured_speedup"] = confirm["speedup"]
        rec["basis"] = "confirmed: the real training script re-run with these settings"
    elif best and faster is False:
        rec["measured_speedup"] = confirm["speedup"]
        rec["basis"] = (f"the confirm run with {confirm['settings']} was not faster ({confirm['speedup']:.2f}x): "
                        "keep the current settings")
    elif best:
        rec["basis"] = f"not confirmed (confirm run: {confirm.get('status')}); current settings kept"
    return rec


def diagnose(r: dict, rules: list[Rule] | None = None, best: dict | None = None) -> tuple[str, list[dict], dict]:
    """Verdict, findings (ordered) and recommendation; `best` is the confirmed candidate's full
    settings (the current loader's, with the confirm run's changes), when there was one."""
    findings: list[Finding] = []
    for rule in rules or RULES:
        findings.extend(rule(r))
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order.get(f.severity, 3))
    return verdict(r), [f.to_dict() for f in findings], recommendation(r, best)
