"""Pure rules: the assembled measurements -> verdict, findings, recommendation.

Every rule is a small function of the report-in-progress (a dict with the measured blocks
of CONTRACT.md: baseline, stages, hangs, crashes, workers_sweep, ...) returning zero or
more findings. No rule touches a process or a file; each finding quotes numbers from
this run. Thresholds live here, in THRESHOLDS, and are documented in the README.
"""

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
}


@dataclass
class Finding:
    id: str
    severity: str  # critical | warning | info
    title: str
    evidence: str
    fix: str

    def to_dict(self) -> dict:
        return asdict(self)


Rule = Callable[[dict], list[Finding]]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.1f} ms"


def _where(c: dict | None) -> str:
    if not c:
        return "no frame in your own code was found"
    return f"{c.get('function')} at {c.get('file')}:{c.get('line')} ({c.get('role')}, pid {c.get('pid')})"


# ---------------------------------------------------------------- rules


def rule_hang(r: dict) -> list[Finding]:
    out = []
    for h in r.get("hangs") or []:
        c = h.get("culprit")
        stage = next((s for s in r.get("stages", []) if s["name"] == h.get("stage")), {})
        roles = {}
        for p in h.get("processes", []):
            roles[p["role"]] = roles.get(p["role"], 0) + 1
        procs = ", ".join(f"{n} {role}" for role, n in sorted(roles.items())) or "no stacks captured"
        threads = h.get("threads_at_fork") or []
        extra = f" Threads alive when the fork-started loader began iterating: {', '.join(threads)}." if threads else ""
        if c and c.get("role") == "worker":
            fix = (f"A DataLoader worker never returned from {c.get('function')} "
                   f"({c.get('file')}:{c.get('line')}). Make that call finish or time out; to see it fail fast, "
                   "pass `timeout=60` to the DataLoader.")
            if threads:
                fix += (" A lock or thread pool held by a thread alive at fork is never released in the child: "
                        "use `multiprocessing_context=\"spawn\"` (or \"forkserver\") in the DataLoader, or "
                        "create that thread after the loader starts its workers.")
        elif c and c.get("role") == "main":
            fix = (f"The training loop itself is stuck in {c.get('function')} ({c.get('file')}:{c.get('line')}), "
                   "not in the data pipeline. Fix that call; the loader is not the cause.")
        else:
            fix = "Read the stacks below for the processes that did not move; re-run with --verbose for the derivation."
        out.append(Finding(
            "hang", "critical", f"Stage '{h.get('stage')}' made no progress: stuck in {c.get('function') if c else 'an unknown frame'}",
            f"No batch or event for {h.get('idle_s')} s ({stage.get('detail', '')}). Stacks by {h.get('method')}: "
            f"{procs}. Culprit: {_where(c)}.{extra}",
            fix))
    return out


def rule_crashes(r: dict) -> list[Finding]:
    out = []
    for c in r.get("crashes") or []:
        where = _where(c.get("culprit"))
        if c.get("role") == "worker":
            if c.get("oom"):
                out.append(Finding(
                    "worker-oom", "critical", "A DataLoader worker was killed for memory",
                    f"Worker pid {c.get('pid')} was killed by SIGKILL in stage '{c['stage']}' and the cgroup's "
                    f"oom_kill counter rose during the stage. Last user frame: {where}.",
                    "Lower memory per worker: fewer workers or a smaller prefetch_factor, keep dataset metadata in "
                    "numpy arrays instead of Python lists/dicts (copy-on-read), or raise the memory limit."))
                continue
            if c.get("signal"):
                what = f"killed by {c['signal']}"
                fix = ("Run the dataset code with num_workers=0 to reproduce it in the main process; the last Python "
                       f"frame before the native crash was {where}.")
                if c.get("shm"):
                    fix = ("Shared memory (/dev/shm) ran out: raise it (docker --shm-size=8g or --ipc=host), or lower "
                           "num_workers, prefetch_factor or the batch size.")
            elif c.get("exception_type"):
                what = f"raised {c['exception_type']}: {c.get('message')}"
                fix = f"Fix the exception raised in {where}; the worker's traceback is in the report."
            else:
                what = f"exited unexpectedly (exit code {c.get('exit_code')})"
                fix = "Run with num_workers=0 to see the error in the main process."
            out.append(Finding("worker-crash", "critical", f"A DataLoader worker {what.split(':')[0]}",
                               f"In stage '{c['stage']}' a worker (pid {c.get('pid')}) {what}. Culprit: {where}.", fix))
        else:
            what = c.get("exception_type") or c.get("signal") or "an error"
            out.append(Finding(
                "script-error", "critical", f"The script failed outside the data pipeline: {what}",
                f"In stage '{c['stage']}' the script raised {what}: {c.get('message')}. Culprit: {where}.",
                "Fix the error in the script (its own traceback is in the stage's stderr.log); loaderdoctor measured "
                "what ran before it."))
    return out


def rule_data_or_compute_bound(r: dict) -> list[Finding]:
    b = r.get("baseline") or {}
    frac = b.get("data_wait_fraction")
    if frac is None or (b.get("steps") or 0) < THRESHOLDS["min_steps"]:
        return []
    ev = (f"Over {b['steps']} measured steps of the real training run, the step waited for data "
          f"{_pct(frac)} of the time (median wait {_ms((b.get('wait_s') or {}).get('median'))}, median compute "
          f"{_ms((b.get('compute_s') or {}).get('median'))}, {b.get('samples_per_s')} samples/s).")
    if frac >= THRESHOLDS["data_bound_fraction"]:
        loader = _train_loader(r)
        nw = loader.get("num_workers") if loader else None
        fix = ("Feed the step faster: raise num_workers in the training DataLoader"
               + (f" (now {nw})" if nw is not None else "") +
               ", set persistent_workers=True, and make the slowest transform cheaper.")
        return [Finding("data-bound", "warning", f"Training waits on data {_pct(frac)} of step time", ev, fix)]
    if frac < THRESHOLDS["compute_bound_fraction"]:
        return [Finding("compute-bound", "info", "The data loader is not what limits training", ev,
                        "Nothing to change in the DataLoader; speed up the model step (batch size, mixed precision, "
                        "a faster device) if training is too slow.")]
    return []


RULES: list[Rule] = [rule_hang, rule_crashes, rule_data_or_compute_bound]


def _train_loader(r: dict) -> dict | None:
    for l in r.get("loaders") or []:
        if l.get("role") == "train":
            return l
    return None


# ---------------------------------------------------------------- verdict, recommendation


def verdict(r: dict) -> str:
    if r.get("hangs"):
        return "hang"
    if r.get("crashes"):
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


def recommendation(r: dict) -> dict:
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
    best = r.get("_best_config")
    if best:
        rec.update({k: v for k, v in best.items() if k in rec})
    confirm = r.get("confirm") or {}
    if confirm.get("speedup") is not None:
        rec["measured_speedup"] = confirm["speedup"]
    return rec


def diagnose(r: dict, rules: list[Rule] | None = None) -> tuple[str, list[dict], dict]:
    findings: list[Finding] = []
    for rule in rules or RULES:
        findings.extend(rule(r))
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order.get(f.severity, 3))
    return verdict(r), [f.to_dict() for f in findings], recommendation(r)
