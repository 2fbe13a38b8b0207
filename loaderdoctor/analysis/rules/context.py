"""Rules on where the loader runs: fork-unsafe, spawn-unsafe, notebook-only, cuda-before-fork."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import Finding, _real, _runs


def rule_fork_unsafe(r: dict) -> list[Finding]:
    runs = _runs(r)
    fork = runs.get("fork")
    ok_others = [m for m in ("spawn", "forkserver") if runs.get(m, {}).get("status") == "ok"]
    if not fork or fork["status"] not in ("hang", "crash") or not ok_others or not fork.get("worker_failed"):
        return []  # a failure that is not the workers' (ours, a framework's) says nothing of fork
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
    if not (pk and pk.get("path")) and not row.get("bootstrap_error") and not row.get("reruns") \
            and not row.get("missing_main_attr") and not row.get("worker_failed"):
        return []  # nothing of the workers failed: not evidence against the script (probe-incomplete says it)
    rerun = (row.get("reruns") or [None])[0]
    if rerun:
        fr = rerun.get("frame") or {}
        at = f" at {fr.get('file')}:{fr.get('line')}" if fr else ""
        title = "No `if __name__ == \"__main__\":` guard: spawn workers re-run the script's training"
        reason = (f"each {failed[0]} worker re-imports the script as __mp_main__ and runs its top level again; one "
                  f"{rerun.get('what')}{at} (loaderdoctor ended it before it could train)")
        fix = ("Put the training code in a function and call it under `if __name__ == \"__main__\":`; keep the "
               "Dataset class, collate_fn and worker_init_fn at module level.")
    elif pk and pk.get("path"):
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
