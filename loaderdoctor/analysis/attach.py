"""Pure: the raw record of `loaderdoctor attach` (observe/attach_sampler.py) -> roles, frozen or
not, culprit, data-wait share, verdict and the report dict. Never touches a process, so it is
tested from hand-built records.

The rules, each a small function below:

* roles: a process running torch's `_worker_loop` is a DataLoader worker; its parent, or a
  process with a thread inside torch.utils.data, is a training process ("main"); a thread in
  `_pin_memory_loop` is the pin-memory thread; the rest (a launcher, the resource tracker) "other".
* the loop thread of a main is the thread most often inside the DataLoader (else MainThread).
* data wait: a loop-thread sample with a frame in torch/utils/data (waiting for a batch, or
  loading it itself when num_workers=0). Share = k/n with a Wilson interval.
* frozen on data: the loop thread waits for a batch in every sample and no worker made
  progress (its batch index unchanged between the two locals dumps; without them: its busy
  stacks unchanged, CPU under PROGRESS_CPU_SHARE of a core and few context switches).
* frozen elsewhere: no sample waits for data, every sample is the same stack, and the process
  used under PROGRESS_CPU_SHARE of a core (or the stack is in a torch.distributed collective).
* culprit: watchdog.find_culprit's rules, with the worker that owes the batch looked at first."""

from __future__ import annotations

import os
import shlex

from loaderdoctor.analysis.attach_view import (
    CI_NOTE,
    MIN_SAMPLES,
    PROGRESS_CPU_SHARE,
    PROGRESS_CTX_PER_S,
    STAGE,
    _hang,
    _ppid,
    _rank,
    analyse_main,
    assign_roles,
    index,
    usage,
    wilson,
)
from loaderdoctor.analysis.rules.attach import (
    rule_data_or_compute_bound,
    rule_hang,
)
from loaderdoctor.analysis.rules.common import THRESHOLDS, _pct, share_verdict
from loaderdoctor.redact import redact_argv

SCHEMA_VERSION = 1


_PY_OPT_WITH_VALUE = ("-W", "-X", "-Q")


def script_of(cmdline: list[str], cwd: str | None = None) -> dict:
    """{script, argv, module} of a Python command line (interpreter options skipped)."""
    args = list(cmdline or [])
    if args and os.path.basename(args[0]).startswith(("python", "pypy")):
        args = args[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-m":
            return {"script": None, "module": args[i + 1] if i + 1 < len(args) else None, "argv": args[i + 2:]}
        if a == "-c":
            return {"script": None, "module": None, "argv": args[i + 2:]}
        if a in _PY_OPT_WITH_VALUE:
            i += 2
            continue
        if a.startswith("-") and a != "-":
            i += 1
            continue
        path = a if os.path.isabs(a) or not cwd else os.path.normpath(os.path.join(cwd, a))
        return {"script": path, "module": None, "argv": args[i + 1:]}
    return {"script": None, "module": None, "argv": []}


_NEXT_STAGES = {
    "hang": "--timeout 60 --stages baseline,context",
    "data-bound": "--stages baseline,loader-only,workers,transforms,confirm",
    "balanced": "--stages baseline,workers,confirm",
    "compute-bound": "--stages baseline",
    "inconclusive": "",
}


def next_command(target: dict, verdict: str, nproc: int | None) -> str:
    flags = _NEXT_STAGES.get(verdict, "")
    if nproc and nproc > 1:
        flags = (flags + f" --nproc-per-node {nproc}").strip()
    script = target.get("script")
    if not script:
        what = f"python -m {target['module']}" if target.get("module") else "this command line"
        return (f"loaderdoctor probe needs the training script's path ({what} has none): "
                f"loaderdoctor probe path/to/train.py {flags}".strip())
    cmd = f"loaderdoctor probe {shlex.quote(script)}" + (f" {flags}" if flags else "")
    if target.get("argv"):
        cmd += " -- " + " ".join(shlex.quote(a) for a in target["argv"])
    return cmd


def _strip(m: dict) -> dict:
    out = {k: v for k, v in m.items() if not k.startswith("_")}
    out["workers"] = [{k: v for k, v in w.items() if not k.startswith("_")} for w in m["workers"]]
    return out


def _loaders(mains: list[dict]) -> list[dict]:
    """One training loader per training process, as far as stacks and the process tree show it."""
    return [{"index": i, "role": "train", "site": (f"{m['loop_site']['file']}:{m['loop_site']['line']}"
                                                      if m["loop_site"] else None),
                "evidence": f"py-spy: pid {m['pid']} inside torch.utils.data in {m['wait_samples']} of {m['samples']} "
                            f"samples; {len(m['workers'])} worker process(es)",
                "dataset": m["dataset"], "num_workers": len(m["workers"]), "batch_size": None,
                "pin_memory": True if m["pin_memory_thread"] else None, "persistent_workers": None,
                "prefetch_factor": None, "start_method": m["start_method"] if m["workers"] else None,
                "pid": m["pid"], "rank": m["rank"]} for i, m in enumerate(mains)]



def _sampler_block(record: dict, v) -> dict:
    """The quality of the sampling itself: rate achieved, py-spy's CPU, lateness."""
    sampler = dict(record.get("sampler") or {})
    per_thread = [len(t.samples) for ths in v.threads.values() for t in ths]
    w = v.window_s or None
    sampler.update({
        "method": "py-spy record --subprocesses --idle --nonblocking (speedscope), plus one py-spy dump --locals of "
                  "each process at each end of the window, and psutil readings",
        "rate_hz": record.get("rate_hz"), "window_s": v.window_s,
        "samples_per_thread": max(per_thread) if per_thread else 0,
        "samples_per_s": round(max(per_thread) / w, 1) if per_thread and w else None,
        "pyspy_cpu_pct_of_core": (round(100 * sampler["pyspy_record_cpu_s"] / w, 1)
                                  if sampler.get("pyspy_record_cpu_s") is not None and w else None),
    })
    sampler.pop("log_tail", None)
    return sampler


def _processes(v, roles: dict[int, str]) -> list[dict]:
    """Every process seen, with its role, rank, command (secrets as ***) and usage."""
    processes = []
    for pid in dict.fromkeys(v.order + list(roles)):
        f = v.first.get(pid) or v.last.get(pid) or {}
        processes.append({"pid": pid, "ppid": _ppid(v, pid), "role": roles.get(pid, "other"), "rank": _rank(v, pid),
                          "command": " ".join(redact(f.get("cmdline") or []))[:300] or f.get("name"),
                          "samples": sum(len(t.samples) for t in v.threads.get(pid, [])), **usage(v, pid)})
    return processes


def _verdict(frozen: bool, share: float | None, n: int) -> str:
    if frozen:
        return "hang"
    if share is None or n < MIN_SAMPLES:
        return "inconclusive"
    return share_verdict(share)


def _environment(record: dict, environment: dict | None) -> dict:
    checked = record.get("checked") or {}
    env = dict(environment or {})
    env.update({"python": (checked.get("python") or {}).get("version") or env.get("python"),
                "executable": (checked.get("python") or {}).get("executable") or env.get("executable")})
    return env


def _ranks(mains: list[dict]) -> list[dict]:
    if len(mains) < 2:
        return []
    return [{"rank": m["rank"], "pid": m["pid"], "steps": None, "data_wait_fraction": m["data_wait_fraction"],
             "data_wait_ci": m["data_wait_ci"], "samples": m["samples"], "frozen": m["frozen"],
             "compute_s": None, "collective_s": None} for m in mains]


def _baseline(share: float | None, ci: list | None, n: int) -> dict:
    """The baseline block as far as stack samples measure it: the data-wait share, no step times."""
    return {"steps": None, "samples_per_s": None, "data_wait_fraction": share, "data_wait_ci": ci,
            "stack_samples": n, "step_s": None, "wait_s": None, "compute_s": None, "first_batch_s": None,
            "method": "py-spy stack samples of the training loop's thread",
            "unmeasured_reason": "attach does not see step boundaries, so steps and step times are not "
                                 "measured; the data-wait share from stack samples is "
                                 f"{_pct(share)} (95% CI {_pct(ci[0]) if ci else 'n/a'}-"
                                 f"{_pct(ci[1]) if ci else 'n/a'}), see the Attach section"}


def _recommendation(train: dict, nxt: str) -> dict:
    """attach never changes the job: the current settings, not measured, and the probe to run."""
    return {"num_workers": train.get("num_workers"), "pin_memory": train.get("pin_memory"),
            "persistent_workers": None, "prefetch_factor": None,
            "multiprocessing_context": train.get("start_method"), "measured_speedup": None, "speedup_ci": None,
            "repeats": 0, "status": "not-measured",
            "basis": f"attach observes and never changes the job; to measure a better configuration run: {nxt}"}


def build_report(record: dict, *, environment: dict | None = None, tool: dict | None = None,
                 options: dict | None = None) -> dict:
    """The report dict (CONTRACT.md, mode "attach"). `attach.mains` is empty when the tree
    showed no DataLoader at all (the caller turns that into exit 2)."""
    v = index(record)
    roles = assign_roles(v)
    mains = [analyse_main(v, pid, roles) for pid, r in roles.items() if r == "main"]
    mains.sort(key=lambda m: (m["rank"] if m["rank"] is not None else 1e9, m["pid"]))
    hangs = [_hang(v, m, (record.get("sampler") or {}).get("end_dump_s")) for m in mains if m["frozen"]]

    n = sum(m["samples"] for m in mains)
    k = sum(m["wait_samples"] for m in mains)
    share = round(k / n, 4) if n else None
    ci = wilson(k, n)
    verdict = _verdict(bool(hangs), share, n)

    primary = mains[0] if mains else None
    root = record.get("pid")
    info = v.first.get(primary["pid"] if primary else root) or v.first.get(root) or {}
    cmd = info.get("cmdline") or []
    so = script_of(cmd, info.get("cwd"))
    so["argv"] = redact(so["argv"])
    env_r = info.get("env") or {}
    try:
        nproc = int(env_r.get("LOCAL_WORLD_SIZE") or env_r.get("WORLD_SIZE") or 0) or (len(mains) if len(mains) > 1
                                                                                        else None)
    except ValueError:
        nproc = len(mains) if len(mains) > 1 else None
    nxt = next_command(so, verdict, nproc)

    loaders = _loaders(mains)
    findings = rule_hang(hangs, mains)
    if not hangs:  # a frozen loop's "share" says nothing about throughput
        findings += rule_data_or_compute_bound(share, ci, n, mains, v.window_s, nxt)
    findings.sort(key=lambda f: {"critical": 0, "warning": 1, "info": 2}.get(f.severity, 3))

    rec = _recommendation(loaders[0] if loaders else {}, nxt)

    sampler = _sampler_block(record, v)
    processes = _processes(v, roles)

    stage_detail = (f"{n} samples of the training loop ({record.get('rate_hz')} Hz) and "
                    f"{sum(p['samples'] for p in processes)} thread samples of {len(processes)} processes over "
                    f"{v.window_s:.1f} s; the job was not paused or changed")
    env = _environment(record, environment)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": tool or {"name": "loaderdoctor", "version": None},
        "target": {"path": so["script"] or (so["module"] and f"-m {so['module']}") or " ".join(cmd[:1]) or None,
                   "kind": "process", "argv": so["argv"], "pid": root,
                   "command": " ".join(redact(cmd))[:500], "module": so["module"]},
        "environment": env,
        "mode": "attach",
        "loaders": loaders,
        "baseline": _baseline(share, ci, n),
        "stages": [{"name": STAGE, "status": "hang" if hangs else "ok", "seconds": round(v.window_s, 2),
                    "detail": stage_detail}],
        "workers_sweep": [], "transforms": [], "collate": None,
        "hangs": hangs, "crashes": [],
        "verdict": verdict,
        "findings": [f.to_dict() for f in findings],
        "recommendation": rec,
        "ranks": _ranks(mains),
        "interrupted": False,
        "options": dict(options or {}),
        "plots": [],
        "attach": {"pid": root, "command": next((p["command"] for p in processes if p["pid"] == root), None),
                   "window_s": v.window_s, "frozen": bool(hangs), "next_command": nxt,
                   "mains": [_strip(m) for m in mains], "processes": processes, "sampler": sampler,
                   "ci_note": CI_NOTE,
                   "thresholds": {"data_bound_fraction": THRESHOLDS["data_bound_fraction"],
                                  "compute_bound_fraction": THRESHOLDS["compute_bound_fraction"],
                                  "progress_cpu_share": PROGRESS_CPU_SHARE, "progress_ctx_per_s": PROGRESS_CTX_PER_S,
                                  "min_samples": MIN_SAMPLES}},
    }


def redact(argv: list[str]) -> list[str]:
    """The command line as recorded: secret values as *** (loaderdoctor.redact)."""
    return redact_argv(list(argv or []))[0]
