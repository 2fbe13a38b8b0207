"""A stage that stopped making progress: its stacks, its culprit, and (after the baseline hung)
whether an experiment is stuck in the same frame, so it need not wait out the timeout."""

from __future__ import annotations

import json
import os
import time

import psutil

from loaderdoctor.analysis.culprits import find_culprit, main_thread
from loaderdoctor.frames import ProcessStack
from loaderdoctor.observe import procs
from loaderdoctor.observe import stacks as stackcap

EARLY_HANG_S = 3.0  # idle this long in the baseline's culprit frame: the same hang


EARLY_CHECK_EVERY_S = 3.0

# torch's main process checks its workers' liveness at least every 5 s
# (MP_STATUS_CHECK_INTERVAL) when its SIGCHLD handler did not fire in time: a little more.
WORKER_DEATH_GRACE_S = 7.0


def same_stall(spec, idle: float, now: float, watch) -> bool:
    """After the baseline hung, is this stage's tree stuck in the same user frame? Checked
    with one light stack capture every few seconds once the stage has been idle a while."""
    c = spec.hang_culprit
    if not c or idle < EARLY_HANG_S or now - watch.checked_at < EARLY_CHECK_EVERY_S:
        return False
    watch.checked_at = now
    with watch.lock:
        pids = set(watch.workers) | ({watch.main_pid} if watch.main_pid else set())
    roles = {}
    for p in pids:
        roles[p] = "main" if p == watch.main_pid else "worker"
    _, stacks, _ = stackcap.capture_stacks(roles, None, spec.stack_method)
    found = find_culprit(stacks) if stacks else None
    watch.same_stall = bool(found and found.get("file") == c.get("file") and found.get("line") == c.get("line"))
    return watch.same_stall


def _dead(pid: int) -> bool:
    """Dead and not yet reaped: torch reaps the workers it shuts down, never one that died
    under it until it notices (its SIGCHLD check only peeks, with WNOWAIT)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def awaiting_worker_death(watch, now: float) -> bool:
    """The stage is idle past its allowance, but a DataLoader worker of it is dead (the OOM
    killer, a signal): that is a crash torch is about to report in its own words (which worker,
    which signal), not a hang. True while that report is due: once per stage, for at most
    WORKER_DEATH_GRACE_S after the death was first seen here."""
    if watch.worker_death_at is None:
        with watch.lock:
            workers = set(watch.workers)
        if not any(_dead(p) for p in workers):
            return False
        watch.worker_death_at = now
    return now - watch.worker_death_at < WORKER_DEATH_GRACE_S


def on_hang(root_pid: int, run_id: str, workers: set[int], stack_dir: str, spec,
             idle: float, waiting_first: bool, mains: set[int]) -> dict:
    roles: dict[int, str] = {}
    for p in procs.run_processes(root_pid, run_id):
        roles[p.pid] = "main" if p.pid in mains else ("worker" if p.pid in workers else "other")
    t0 = time.monotonic()
    method, stacks, why_not_pyspy = stackcap.capture_stacks(roles, stack_dir, spec.stack_method)
    capture_s = time.monotonic() - t0
    processes = []
    for ps in stacks:
        if ps.role == "main":
            pin = [t for t in ps.threads if any("_pin_memory_loop" in (f.get("function") or "") for f in t.frames)]
            rest = [t for t in ps.threads if t not in pin]
            for t in pin:
                processes.append({"pid": ps.pid, "role": "pin_memory", "thread": t.name, "frames": t.frames})
            ps = ProcessStack(ps.pid, ps.role, rest)
        main_t = main_thread(ps)
        processes.append({
            "pid": ps.pid, "role": ps.role, "thread": main_t.name if main_t else None,
            "frames": main_t.frames if main_t else [],
            "threads": [{"name": t.name, "frames": t.frames} for t in ps.threads],
        })
    with open(os.path.join(stack_dir, "hang.json"), "w") as f:
        json.dump(processes, f, indent=1)
    culprit = find_culprit(stacks)
    return {
        "stage": spec.name, "method": method if stacks else "none", "processes": processes,
        "py_spy_not_used": why_not_pyspy,
        "culprit": culprit, "idle_s": round(idle, 3), "capture_s": round(capture_s, 3),
        "waiting_first_batch": waiting_first,
    }
