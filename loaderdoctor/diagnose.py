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
    # the sweep: a configuration must beat the current one by this much (loader-only rate)
    "workers_gain": 0.10,
    # fewer workers that reach at least this share of the current rate are "as fast"
    "workers_as_fast": 0.95,
    # one transform's share of per-sample time that makes it dominant
    "slow_transform_share": 0.50,
    # collate's share of the workers' fetch time (samples + collate)
    "slow_collate_share": 0.30,
    # iterator start-up's share of the training loop's time (per epoch or per loader)
    "worker_startup_share": 0.20,
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


# Stages that run the user's real training loop. Hangs and crashes of the experiments
# (sweep configurations, start methods, ablation) speak through their own rules and tables.
REAL_RUNS = ("baseline", "confirm", "check")


def _real(items: list[dict] | None) -> list[dict]:
    return [x for x in items or [] if x.get("stage") in REAL_RUNS]


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


def _code(settings: dict) -> str:
    return "DataLoader(..., " + ", ".join(f"{k}={v!r}" for k, v in settings.items()) + ")"


def _confirm_text(r: dict) -> str:
    c = r.get("confirm") or {}
    if c.get("speedup") is not None:
        return (f" Confirmed on the real training script with {_code(c['settings'])}: "
                f"{c['baseline_samples_per_s']} -> {c['confirm_samples_per_s']} samples/s "
                f"({c['speedup']:.2f}x).")
    if c:
        return f" The confirm run did not complete ({c.get('status')}), so no speedup is claimed."
    return ""


def _sweep_rate(r: dict, n: int | None) -> float | None:
    return next((row["samples_per_s"] for row in r.get("workers_sweep") or [] if row["num_workers"] == n), None)


def _confirmed_faster(r: dict) -> bool | None:
    c = r.get("confirm") or {}
    if c.get("speedup") is None:
        return None
    return c["speedup"] >= THRESHOLDS["confirm_min_speedup"]


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
            return [Finding("too-few-workers", "info", "More workers feed the loader faster, but training did not "
                            "speed up", ev + _confirm_text(r),
                            "Keep the current num_workers: the step itself, not the loader, limits the real run.")]
        return [Finding("too-few-workers", "warning",
                         f"num_workers={choice} loads {rn / rc:.1f}x faster than num_workers={current}",
                         ev + _confirm_text(r), f"Use {_code(settings)} for the training DataLoader.")]
    if choice < current and rn >= rc * THRESHOLDS["workers_as_fast"]:
        return [Finding("too-many-workers", "info",
                        f"num_workers={choice} is as fast as num_workers={current}", ev + _confirm_text(r),
                        f"Use {_code(settings)}: fewer processes, less memory, same throughput.")]
    return []


def _loader_matters(r: dict) -> bool:
    """A slow part of the pipeline is worth a finding only when the real step waits on data:
    with the data wait under the compute-bound threshold, nothing is gained by speeding it up."""
    b = r.get("baseline") or {}
    frac = b.get("data_wait_fraction")
    return frac is not None and (b.get("steps") or 0) >= THRESHOLDS["min_steps"] \
        and frac >= THRESHOLDS["compute_bound_fraction"]


def rule_slow_transform(r: dict) -> list[Finding]:
    rows = [t for t in r.get("transforms") or [] if t.get("share") is not None]
    if not rows or not _loader_matters(r):
        return []
    top = max(rows, key=lambda t: t["share"])
    if top["share"] < THRESHOLDS["slow_transform_share"]:
        return []
    ranked = ", ".join(f"{t['name']} {100 * t['share']:.0f}%" for t in sorted(rows, key=lambda t: -t["share"]))
    info = r.get("pipeline") or {}
    return [Finding("slow-transform", "warning",
                    f"{top['name']} takes {100 * top['share']:.0f}% of each sample's time",
                    f"Timed inside the loader's processes over the full pipeline ({info.get('path')}): "
                    f"{top['name']} (step {top['position']}) costs {top['ms_per_sample']:.2f} ms per sample of "
                    f"{info.get('sample_ms')} ms. Shares: {ranked}.",
                    f"Make {top['name']} cheaper (a vectorised or native implementation, smaller inputs), cache its "
                    "output if it is deterministic, or run it on the GPU after the batch is loaded.")]


def rule_slow_collate(r: dict) -> list[Finding]:
    c = r.get("collate")
    if not c or c["share"] < THRESHOLDS["slow_collate_share"] or not _loader_matters(r):
        return []
    return [Finding("slow-collate", "warning", f"Collating takes {100 * c['share']:.0f}% of the data time",
                    f"collate_fn took {c['ms_per_batch']:.2f} ms per batch, {100 * c['share']:.0f}% of the time "
                    "the loader's processes spent fetching (samples + collate).",
                    "Return arrays/tensors from __getitem__ (not Python lists or dicts of scalars), collate with "
                    "torch.stack on pre-allocated tensors, or use batched reads (__getitems__).")]


def rule_worker_startup(r: dict) -> list[Finding]:
    b = r.get("baseline") or {}
    share = b.get("startup_share")
    loader = _train_loader(r) or {}
    firsts = b.get("first_batch_s_all") or []
    if share is None or share < THRESHOLDS["worker_startup_share"] or len(firsts) < 2:
        return []
    per = ", ".join(f"{x:.2f} s" for x in firsts[:6])
    rebuilt = (loader.get("instances") or 1) > 1
    if rebuilt:
        fix = ("The training DataLoader is built again for every epoch (construction site "
               f"{loader.get('site')}); build it once, before the epoch loop, with persistent_workers=True.")
    else:
        fix = "Pass persistent_workers=True to the training DataLoader so its workers survive between epochs."
    return [Finding("worker-startup", "warning",
                    f"Starting the loader's workers takes {100 * share:.0f}% of training time",
                    f"{len(firsts)} iterators of the training loader each waited for a first batch ({per}); "
                    f"with num_workers={loader.get('num_workers')} and persistent_workers="
                    f"{loader.get('persistent_workers')}, start-up was {100 * share:.0f}% of the measured loop "
                    f"time.{_confirm_text(r)}", fix)]


def _runs(r: dict) -> dict:
    return {row["method"]: row for row in r.get("start_methods") or []}


def rule_fork_unsafe(r: dict) -> list[Finding]:
    runs = _runs(r)
    fork = runs.get("fork")
    ok_others = [m for m in ("spawn", "forkserver") if runs.get(m, {}).get("status") == "ok"]
    if not fork or fork["status"] not in ("hang", "crash") or not ok_others:
        return []
    bits = []
    if fork["threads_at_start"]:
        bits.append(f"threads alive when the workers were forked: {', '.join(fork['threads_at_start'])}")
    if fork["native_pools"]:
        bits.append(f"native thread-pool libraries loaded: {', '.join(fork['native_pools'])}")
    if fork["cuda_init"]:
        bits.append("CUDA was initialised before the fork")
    why = "; ".join(bits) if bits else "no thread, native pool or CUDA context was seen at fork"
    others = ", ".join(f"{m}: {runs[m]['status']}" for m in ("spawn", "forkserver") if m in runs)
    return [Finding("fork-unsafe", "critical", f"The loader {fork['status']}s under fork but works under "
                    f"{' and '.join(ok_others)}",
                    f"The training loader was run under each start method: fork: {fork['status']} "
                    f"({fork['detail']}); {others}. At fork: {why}.",
                    f'Pass multiprocessing_context="{ok_others[0]}" to the DataLoader (keep the training code under '
                    'an `if __name__ == "__main__":` guard), or start that thread only after the loader\'s workers '
                    "have started.")]


def rule_spawn_unsafe(r: dict) -> list[Finding]:
    runs = _runs(r)
    failed = [m for m in ("spawn", "forkserver") if runs.get(m, {}).get("status") in ("hang", "crash", "failed")]
    if not failed or runs.get("fork", {}).get("status") != "ok":
        return []
    row = runs[failed[0]]
    static = r.get("static") or {}
    pk = row.get("pickle")
    if pk and pk.get("path"):
        title = f"{pk['path']} cannot be pickled for {failed[0]} workers"
        reason = f"`{pk['path']}` ({pk.get('type')}) cannot be pickled: {pk.get('error')}"
        fix = (f"Make `{pk['path']}` picklable: a module-level function or class instead of a lambda or a local "
               "function (functools.partial of a module-level function works), or open handles lazily in the "
               "worker.")
    elif row.get("bootstrap_error") or static.get("has_guard") is False:
        lines = ", ".join(str(x) for x in (static.get("toplevel_calls") or [])[:8])
        title = "No `if __name__ == \"__main__\":` guard: spawn workers re-run the script"
        reason = ("the script has no `if __name__ == \"__main__\":` guard, so each spawned worker re-runs its top "
                  f"level (statements at lines {lines})" + ("; the workers failed with 'An attempt has been made to "
                                                            "start a new process before the current process has "
                                                            "finished its bootstrapping phase'"
                                                            if row.get("bootstrap_error") else ""))
        fix = ("Put the training code in a function and call it under `if __name__ == \"__main__\":`; keep the "
               "Dataset class, collate_fn and worker_init_fn at module level.")
    elif row.get("missing_main_attr"):
        title = f"{row['missing_main_attr']} exists only in __main__: spawn workers cannot import it"
        reason = (f"the workers failed with \"Can't get attribute '{row['missing_main_attr']}' on <module "
                  "'__main__'>\": it is defined in the notebook or the main script's unguarded code")
        fix = f"Move {row['missing_main_attr']} into a .py module and import it from there."
    else:
        title = f"The loader fails under {failed[0]} but works under fork"
        reason = row.get("error") or row.get("detail")
        fix = "Read the worker's error below; under spawn/forkserver everything the workers need must be importable."
    others = ", ".join(f"{m}: {runs[m]['status']}" for m in ("fork", "spawn", "forkserver") if m in runs)
    return [Finding("spawn-unsafe", "warning", title,
                    f"The training loader was run under each start method ({others}). Under {failed[0]}: {reason}. "
                    "spawn is the default on macOS and Windows, and forkserver on Linux from Python 3.14.", fix)]


def rule_notebook_only(r: dict) -> list[Finding]:
    sf = r.get("script_form")
    base = next((s for s in r.get("stages") or [] if s["name"] == "baseline"), None)
    if not sf or not base or base["status"] not in ("hang", "crash", "failed") or sf["status"] != "ok":
        return []
    crash = next((c for c in _real(r.get("crashes")) if c.get("stage") == "baseline"), {})
    missing = crash.get("missing_main_attr")
    if missing:
        why = (f"The DataLoader workers could not import {missing}: it is defined in a notebook cell, and a "
               f"spawn/forkserver worker imports the kernel's __main__, which does not have it. The worker printed "
               f"\"{crash.get('worker_error')}\" to the kernel's log, which the notebook never shows.")
        fix = (f"Move {missing} (and the functions it uses) into a .py module next to the notebook and import it "
               "from there; or use num_workers=0 inside the notebook.")
    else:
        why = f"In the notebook: {base['detail']}."
        fix = "Run the training as a script, or move the Dataset and its helpers into a .py module imported by the notebook."
    m = sf.get("measured") or {}
    ran = f", {m['steps']} steps at {m['samples_per_s']} samples/s" if m.get("steps") else ""
    return [Finding("notebook-only", "critical", "The notebook fails where the same code as a script works",
                    f"The notebook, run in a Jupyter kernel: {base['status']} ({base['detail']}). The same code cells "
                    f"as a script ({sf.get('path')}): ok{ran}. {why}", fix)]


def _mb(x: float) -> str:
    return f"{x / 2**20:.1f} MB"


def rule_shm_small(r: dict) -> list[Finding]:
    out = []
    shm_crash = next((c for c in _real(r.get("crashes")) if c.get("shm")), None)
    p = r.get("preflight") or {}
    total, flight = p.get("shm_bytes_total"), p.get("in_flight_bytes")
    arithmetic = None
    if total and flight:
        arithmetic = (f"/dev/shm holds {_mb(total)}; in flight: {p['num_workers']} workers x prefetch_factor "
                      f"{p['prefetch_factor']} x {_mb(p['batch_bytes'])} per batch (measured: {p.get('batch_bytes_from')}) = "
                      f"{_mb(flight)}")
    if shm_crash:
        out.append(Finding("shm-small", "critical", "Shared memory (/dev/shm) ran out",
                           f"A worker failed with {shm_crash.get('signal') or shm_crash.get('exception_type')}: "
                           f"{shm_crash.get('message')}." + (f" {arithmetic}." if arithmetic else ""),
                           "Give the container more shared memory (docker run --shm-size=8g, or --ipc=host; in "
                           "Kubernetes an emptyDir with medium: Memory on /dev/shm), or lower num_workers, "
                           "prefetch_factor or the batch size."))
    elif arithmetic and total < THRESHOLDS["shm_headroom"] * flight:
        out.append(Finding("shm-small", "warning", "/dev/shm is too small for the batches in flight",
                           f"{arithmetic}, more than half of it; a second live iterator (validation) doubles that.",
                           f"Raise /dev/shm to at least {_mb(4 * flight)} (docker --shm-size), or lower num_workers, "
                           "prefetch_factor or the batch size."))
    return out


def rule_fd_limit(r: dict) -> list[Finding]:
    fd_crash = next((c for c in _real(r.get("crashes")) if any(
        s in (c.get("message") or "") for s in ("Too many open files", "received 0 items of ancdata"))), None)
    p = r.get("preflight") or {}
    limit, tensors = p.get("open_files_limit"), p.get("in_flight_tensors")
    fix = ("Raise the limit (`ulimit -n 65536` before training), or call "
           "torch.multiprocessing.set_sharing_strategy('file_system') at the start of the script; do not keep "
           "references to whole batches.")
    if fd_crash:
        return [Finding("fd-limit", "critical", "The process ran out of file descriptors",
                        f"The run failed with: {fd_crash.get('message')}. Open-file limit: {limit}.", fix)]
    strategy = p.get("sharing_strategy")
    if strategy == "file_system":  # tensors travel as named files in /dev/shm: no descriptor each
        return []
    if limit and tensors and p.get("num_workers") and (limit < THRESHOLDS["fd_headroom"] * tensors
                                                       or limit < THRESHOLDS["fd_min"]):
        how = f"the '{strategy}' sharing strategy: " if strategy else ""
        return [Finding("fd-limit", "warning", f"The open-file limit ({limit}) is low for this loader",
                        f"Each batch holds {p['tensors_per_batch']} tensors; {p['num_workers']} workers x prefetch_factor "
                        f"{p['prefetch_factor']} keep {tensors} in flight, {how}one file descriptor each when shared "
                        f"with the main process; the soft limit is {limit}.", fix)]
    return []


def rule_cuda_before_fork(r: dict) -> list[Finding]:
    p = r.get("preflight") or {}
    if not p.get("cuda_init_at_fork"):
        return []
    return [Finding("cuda-before-fork", "critical", "CUDA was initialised before the loader forked its workers",
                    f"torch.cuda.is_initialized() was True when the fork-started training loader started its "
                    f"{p['num_workers']} workers: CUDA cannot be used in a forked child, and any CUDA call in the "
                    "dataset or transforms fails or hangs there.",
                    "Keep the dataset and transforms on the CPU (return CPU tensors; move the batch with "
                    ".to(device, non_blocking=True) and pin_memory=True), or use multiprocessing_context=\"spawn\".")]


def rule_thread_oversubscription(r: dict) -> list[Finding]:
    p = r.get("preflight") or {}
    total, cpus, nw = p.get("worker_threads_total_max"), p.get("cpu_count_effective"), p.get("num_workers") or 0
    if not total or not cpus or nw < 2:
        return []
    pools = total - nw * THRESHOLDS["worker_base_threads"]
    if pools <= THRESHOLDS["threads_per_cpu"] * cpus:
        return []
    return [Finding("thread-oversubscription", "warning",
                    f"{pools} thread-pool threads in the workers compete for {cpus} CPUs",
                    f"Sampled during the baseline: {nw} workers with up to {p['worker_threads_max']} threads each, "
                    f"{total} threads at once; beyond torch's own {THRESHOLDS['worker_base_threads']} per worker that "
                    f"is {pools} pool threads on {cpus} effective CPUs (affinity and cgroup quota).",
                    "Limit each worker to one thread: set OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1 in the "
                    "environment, or call torch.set_num_threads(1) and cv2.setNumThreads(0) in worker_init_fn.")]


RULES: list[Rule] = [rule_hang, rule_crashes, rule_data_or_compute_bound, rule_workers, rule_slow_transform,
                     rule_slow_collate, rule_worker_startup, rule_fork_unsafe, rule_spawn_unsafe, rule_shm_small,
                     rule_fd_limit, rule_cuda_before_fork, rule_thread_oversubscription, rule_notebook_only]


def _train_loader(r: dict) -> dict | None:
    for l in r.get("loaders") or []:
        if l.get("role") == "train":
            return l
    return None


# ---------------------------------------------------------------- verdict, recommendation


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


def diagnose(r: dict, rules: list[Rule] | None = None) -> tuple[str, list[dict], dict]:
    findings: list[Finding] = []
    for rule in rules or RULES:
        findings.extend(rule(r))
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order.get(f.severity, 3))
    return verdict(r), [f.to_dict() for f in findings], recommendation(r)
