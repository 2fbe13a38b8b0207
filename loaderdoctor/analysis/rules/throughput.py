"""Rules on how fast data comes: data-bound, compute-bound, too-few/too-many-workers
(worker-startup and epoch-restart: rules/startup.py)."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import (
    THRESHOLDS,
    Finding,
    _code,
    _ms,
    _pct,
    _train_loader,
)
from loaderdoctor.analysis.rules.weigh import impact_of
from loaderdoctor.analysis.tuning import keeps_semantics


def rule_data_or_compute_bound(r: dict) -> list[Finding]:
    b = r.get("baseline") or {}
    frac = b.get("data_wait_fraction")
    if frac is None or (b.get("steps") or 0) < THRESHOLDS["min_steps"]:
        return []
    ev = (f"Over {b['steps']} measured steps of the real training run, the step waited for data "
          f"{_pct(frac)} of the time (median wait {_ms((b.get('wait_s') or {}).get('median'))}, median compute "
          f"{_ms((b.get('compute_s') or {}).get('median'))}, {b.get('samples_per_s')} samples/s).")
    if b.get("wait_method") == "loop boundary":
        ev += (f" Measured at the loop's boundary (from each optimizer step's end to the model's next forward: "
               f"loading plus what wraps the batch); the loader's own wait was {_pct(b.get('loader_wait_fraction'))}.")
    if frac >= THRESHOLDS["data_bound_fraction"]:
        return [Finding("data-bound", "warning", f"Training waits on data {_pct(frac)} of step time", ev,
                        _data_bound_fix(r), impact=impact_of(frac, r))]
    if frac < THRESHOLDS["compute_bound_fraction"]:
        return [Finding("compute-bound", "info", "The data loader is not what limits training", ev,
                        "Nothing to change in the DataLoader; speed up the model step (batch size, mixed precision, "
                        "a faster device) if training is too slow.")]
    return []


def _data_bound_fix(r: dict) -> str:
    """The fix that tells the recommendation's story: the confirmed settings, or why more
    workers are not it and where the time goes instead."""
    rec = r.get("recommendation") or {}
    loader = _train_loader(r) or {}
    nw = loader.get("num_workers")
    if rec.get("status") == "confirmed":
        return f"Use the recommended settings ({rec.get('basis')}); then make the slowest transform cheaper."
    c = r.get("confirm") or {}
    if c.get("verdict") in ("within-noise", "slower") and c.get("speedup") is not None:
        ci = c.get("speedup_ci")
        span = f", 95% interval {ci[0]:.2f}-{ci[1]:.2f}x" if ci else ""
        return (f"With {_code(c.get('settings') or {})} the real run was not faster beyond the noise "
                f"({c['speedup']:.2f}x{span}), so the current settings stand: make each sample cheaper (see the "
                "transforms and any slow read) or cache deterministic work.")
    sweep = r.get("sweep") or {}
    if sweep.get("choice") is not None and sweep.get("choice") == sweep.get("current"):
        return (f"More workers did not load faster in the sweep (num_workers={nw} is the best measured): make each "
                "sample cheaper (see the transforms and any slow read), cache deterministic work, or set "
                "persistent_workers=True if the loader is re-created each epoch.")
    fix = ("Feed the step faster: more workers in the training DataLoader" + (f" (now {nw})" if nw is not None else "")
           + ", persistent_workers=True, and a cheaper slowest transform")
    if c.get("status") not in (None, "skipped") and c.get("speedup") is None:
        return fix + f"; the confirm run did not complete ({c.get('status')}), so which of them helps is not measured."
    if sweep.get("choice") is None:
        return fix + "; the probe's sweep and confirm stages measure which helps."
    return fix + "."


def _confirm_text(r: dict) -> str:
    c = r.get("confirm") or {}
    if c.get("speedup") is not None:
        ci = c.get("speedup_ci")
        span = f" (95% interval {ci[0]:.2f}-{ci[1]:.2f}x over {c['repeats']} interleaved pairs)" if ci else \
            f" ({c.get('repeats', 0)} pair, no interval)"
        word = {"confirmed": "Confirmed", "within-noise": "Within noise", "slower": "Slower"}.get(c.get("verdict"),
                                                                                                 "Measured")
        return (f" {word} on the real training script with {_code(c['settings'])}: median "
                f"{c['baseline_samples_per_s']} -> {c['confirm_samples_per_s']} samples/s "
                f"({c['speedup']:.2f}x{span}).")
    if c:
        return f" The confirm run did not complete ({c.get('status')}), so no speedup is claimed."
    return ""


def _sweep_rate(r: dict, n: int | None) -> float | None:
    return next((row["samples_per_s"] for row in r.get("workers_sweep") or [] if row["num_workers"] == n), None)


def _confirmed_faster(r: dict) -> bool | None:
    c = r.get("confirm") or {}
    if c.get("speedup") is None or c.get("verdict") in (None, "not-measured"):
        return None  # no interval: neither faster nor slower is known
    return c.get("verdict") == "confirmed"


def rule_workers(r: dict) -> list[Finding]:
    sweep = r.get("sweep") or {}
    choice, current = sweep.get("choice"), sweep.get("current")
    if choice is None or current is None or choice == current:
        return []
    rc, rn = _sweep_rate(r, current), _sweep_rate(r, choice)
    if not rc or not rn:
        return []
    table = ", ".join(f"{row['num_workers']}: {row['samples_per_s']}" for row in r["workers_sweep"]
                      if row.get("samples_per_s"))
    ev = (f"Loader-only samples/s by num_workers ({table}); the current setting is {current}, "
          f"the fewest within 5% of the best is {choice}. Effective CPUs: {sweep.get('effective_cpus')}; "
          f"the sweep stopped because {sweep.get('why_stopped')}.")
    confirmed = _confirmed_faster(r)
    settings = (r.get("confirm") or {}).get("settings") or {"num_workers": choice}
    if choice > current and rn >= rc * (1 + THRESHOLDS["workers_gain"]):
        if confirmed is False:
            slower = (r.get("confirm") or {}).get("verdict") == "slower"
            return [Finding("too-few-workers", "info", "More workers feed the loader faster, but training did not "
                            "speed up", ev + _confirm_text(r),
                            "Keep the current num_workers: the real run with more was "
                            + ("slower." if slower else "not faster beyond the noise."))]
        frac = (r.get("baseline") or {}).get("data_wait_fraction")
        share = min(frac, 1 - rc / rn) if frac is not None else None
        return [Finding("too-few-workers", "warning",
                         f"num_workers={choice} loads {rn / rc:.1f}x faster than num_workers={current}",
                         ev + _confirm_text(r), f"Use {_code(settings)} for the training DataLoader.",
                         impact=impact_of(share, r), proposes={"num_workers": choice})]
    if choice < current and rn >= rc * THRESHOLDS["workers_as_fast"] \
            and keeps_semantics(_train_loader(r) or {}, {"num_workers": choice}):
        return [Finding("too-many-workers", "info",
                        f"num_workers={choice} is as fast as num_workers={current}", ev + _confirm_text(r),
                        f"Use {_code(settings)}: fewer processes, less memory, same throughput.",
                        proposes={"num_workers": choice})]
    return []
