"""Rules for runs that did not complete: hang, worker-crash, worker-oom, script-error."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _mb, _real, _where


def rule_hang(r: dict) -> list[Finding]:
    out = []
    for h in _real(r.get("hangs")):
        c = h.get("culprit")
        stage = next((s for s in r.get("stages", []) if s["name"] == h.get("stage")), {})
        roles = {}
        for p in h.get("processes", []):
            roles[p["role"]] = roles.get(p["role"], 0) + 1
        procs = ", ".join(f"{n} {role}" for role, n in sorted(roles.items())) or "no stacks captured"
        threads = h.get("threads_at_fork") or []
        extra = f" Threads alive when the fork-started loader began iterating: {', '.join(threads)}." if threads else ""
        pc = (r.get("pipeline") or {}).get("culprit")
        if pc and pc.get("status") == "hang":
            extra += (f" The transforms stage's prefix ablation (the pipeline run with its first k steps, "
                      f"k = 0, 1, ...) stopped making progress when step {pc['position']} ({pc['name']}) was added.")
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
            (f"Ranks: {h['story']}. " if h.get("story") else "") +
            f"No batch or event for {h.get('idle_s')} s ({stage.get('detail', '')}). Stacks by {h.get('method')}: "
            f"{procs}. Culprit: {_where(c)}.{extra}",
            fix))
    return out


def _oom_evidence(c: dict, env: dict) -> str | None:
    """Why a SIGKILLed process was killed for memory, from this run's records: a kernel
    OOM-kill counter that rose during the stage, or the process's own memory growing in
    the samples (by oom_growth_mb and oom_growth_ratio). None when neither was seen."""
    if c.get("signal") != "SIGKILL":
        return None
    said = []
    if c.get("oom"):
        rose = ", ".join(f"{src} by {n}" for src, n in (c.get("oom_record") or {}).items())
        said.append(f"the kernel's oom_kill counter rose during the stage ({rose})")
    m = c.get("memory") or {}
    if m.get("readings", 0) >= 2 and m["peak_mb"] - m["first_mb"] >= THRESHOLDS["oom_growth_mb"] \
            and m["peak_mb"] >= THRESHOLDS["oom_growth_ratio"] * max(m["first_mb"], 1.0):
        limit = env.get("cgroup_memory_limit_bytes") or env.get("memory_total_bytes")
        of = (f" (memory limit {_mb(limit)}, {'cgroup' if env.get('cgroup_memory_limit_bytes') else 'machine'})"
              if limit else "")
        said.append(f"its private memory (USS) grew from {m['first_mb']:.0f} MB to {m['peak_mb']:.0f} MB between "
                    f"{m['first_t']:.1f} s and {m['last_t']:.1f} s of the stage ({m['readings']} readings){of}")
    return "; ".join(said) or None


def rule_crashes(r: dict) -> list[Finding]:
    out = []
    for c in _real(r.get("crashes")):
        where = _where(c.get("culprit"))
        if c.get("role") == "worker":
            if c.get("shm"):
                continue  # rule_shm_small reports it, with the arithmetic
            oom = _oom_evidence(c, r.get("environment") or {})
            if oom:
                out.append(Finding(
                    "worker-oom", "critical", "A DataLoader worker was killed for memory",
                    f"Worker pid {c.get('pid')} was killed by SIGKILL in stage '{c['stage']}'; {oom}. "
                    + (f"Last user frame: {where}." if c.get("culprit") else "SIGKILL leaves no stack to read."),
                    "Lower memory per worker: fewer workers or a smaller prefetch_factor, keep dataset metadata in "
                    "numpy arrays instead of Python lists/dicts (copy-on-read), or raise the memory limit."))
                continue
            if c.get("signal"):
                what = f"was killed by {c['signal']}"
                fix = ("Run the dataset code with num_workers=0 to reproduce it in the main process; the last Python "
                       f"frame before the native crash was {where}.")
                if c["signal"] == "SIGKILL":  # sent from outside: not a native crash, and no OOM evidence here
                    m = c.get("memory")
                    what += ("; no OOM-kill counter we can read rose, and " +
                             (f"its private memory went from {m['first_mb']:.0f} MB to {m['peak_mb']:.0f} MB in "
                              f"{m['readings']} readings" if m else "its memory was never sampled") +
                             ": why it was killed is inconclusive")
                    fix = ("Something outside the worker killed it: the kernel's OOM killer (look for 'Out of memory' "
                           "in `dmesg` or the container's events), a job scheduler, or a kill in your own code. If it "
                           "was memory, use fewer workers or a smaller prefetch_factor.")
            elif c.get("exception_type"):
                what = f"raised {c['exception_type']}: {c.get('message')}"
                fix = f"Fix the exception raised in {where}; the worker's traceback is in the report."
                if c.get("starting_workers"):
                    what = f"could not be started: {c['exception_type']}: {c.get('message')}"
                    fix = ("Everything a spawn/forkserver worker needs must pickle and be importable; see the "
                           "start-methods table for the part that is not.")
                if c.get("missing_main_attr"):
                    what += f"; a worker printed: {c['worker_error']}"
                    fix = (f"{c['missing_main_attr']} lives only in __main__, which a spawn/forkserver worker cannot "
                           "import: move it into a .py module and import it from there.")
            else:
                what = f"exited unexpectedly (exit code {c.get('exit_code')})"
                fix = "Run with num_workers=0 to see the error in the main process."
                if c.get("missing_main_attr"):
                    what += f"; it printed: {c['worker_error']}"
                    fix = (f"{c['missing_main_attr']} lives only in __main__, which a spawn/forkserver worker cannot "
                           f"import: move it into a .py module and import it from there.")
            who = f"pid {c['pid']}" if c.get("pid") else f"worker {c.get('worker_id')}"
            title = what.split(";")[0].split(":")[0]
            out.append(Finding("worker-crash", "critical", f"A DataLoader worker {title}",
                               f"In stage '{c['stage']}' a worker ({who}) {what}. Culprit: {where}.", fix))
        else:
            what = c.get("exception_type") or c.get("signal") or "an error"
            out.append(Finding(
                "script-error", "critical", f"The script failed outside the data pipeline: {what}",
                f"In stage '{c['stage']}' the script raised {what}: {c.get('message')}. Culprit: {where}.",
                "Fix the error in the script (its own traceback is in the stage's stderr.log); loaderdoctor measured "
                "what ran before it."))
    return out
