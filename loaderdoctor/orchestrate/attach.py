"""`loaderdoctor attach PID`: validate the PID, sample its live tree, analyse, write the reports.

    check_target (py-spy can read it, it is Python) -> sample_tree (observe) -> build_report
    (analysis, pure) -> report.json / report.md / report.html + session.json (the raw record)

The job is never paused, signalled or changed: py-spy runs with --nonblocking, psutil only reads.

Porting note: this is loaderdoctor/orchestrate/attach.py in the package layout. It lives beside
orchestrate.py for now because a package folder named orchestrate/ would shadow that module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

from loaderdoctor import __version__
from loaderdoctor.analysis.attach import build_report
from loaderdoctor.errors import EXIT_HANG, EXIT_OK, EXIT_USAGE, LoaderDoctorError
from loaderdoctor.observe import envinfo
from loaderdoctor.observe.attach_sampler import (
    SamplerError,
    check_target,
    ptrace_scope,
    sample_tree,
)
from loaderdoctor.orchestrate import outpaths
from loaderdoctor.orchestrate.outputs import attach_sources
from loaderdoctor.render import get as get_renderer
from loaderdoctor.render.text import VERDICT_TEXT, frame_line, pct

DEFAULT_OUT = "loaderdoctor-attach"
DEFAULT_DURATION = 10.0
_SCOPE = {
    0: "classic ptrace permissions: any process of the same user",
    1: "restricted: only a parent may trace its children, unless the tracer has CAP_SYS_PTRACE",
    2: "admin-only: only a process with CAP_SYS_PTRACE may attach",
    3: "no attach at all, until reboot",
}


def _who(e: SamplerError, pid: int) -> str:
    return f"PID {e.pid or pid}" + (f" ({e.process})" if e.process else "")


def ptrace_help(scope: int | None) -> str:
    if scope is None:
        where = "This kernel has no Yama ptrace_scope file, so the refusal comes from user ids or capabilities."
    else:
        where = f"/proc/sys/kernel/yama/ptrace_scope is {scope} ({_SCOPE.get(scope, 'unknown value')})."
        if scope == 3:
            where += " Nothing can attach until the machine reboots with a lower value."
        elif scope >= 1:
            where += (" As root, `sysctl kernel.yama.ptrace_scope=0` (or 1 with CAP_SYS_PTRACE) allows it; it is "
                      "a machine-wide setting.")
    return (f"{where} Run loaderdoctor as the job's own user or as root with the SYS_PTRACE capability; in a "
            "container, start it with `docker run --cap-add SYS_PTRACE ...` (Kubernetes: securityContext."
            "capabilities.add: [\"SYS_PTRACE\"]).")


def explain(e: SamplerError, pid: int) -> str:
    """One paragraph per reason the tree cannot be sampled (exit 2)."""
    who = _who(e, pid)
    if e.kind == "not-running":
        return (f"PID {pid} is not running ({e.detail}). Give the PID of a running training process "
                "(`pgrep -f train.py`); under torchrun the launcher's PID works too. Nothing was written.")
    if e.kind == "no-ptrace":
        return (f"loaderdoctor may not read the stacks of {who}: ptrace is not permitted (py-spy said: "
                f"\"{e.detail}\"). {ptrace_help(ptrace_scope())} The job was not touched; nothing was written.")
    if e.kind == "not-python":
        return (f"{who} is not a Python process and none of its descendants is one (py-spy said: \"{e.detail}\"). "
                "Give the PID of the Python training process, or of its launcher (torchrun). Nothing was written.")
    if e.kind == "py-spy-missing":
        return ("attach reads the job's stacks with py-spy, which was not found beside this Python or on PATH: "
                "`pip install py-spy`, or point LOADERDOCTOR_PY_SPY at the executable. Nothing was written.")
    return f"py-spy could not sample {who}: {e.detail}. The job was not touched; nothing was written."


def _no_dataloader(pid: int, checked: dict, report: dict) -> str:
    procs = report["attach"]["processes"]
    window = report["attach"]["window_s"]
    return (f"PID {pid} ({checked.get('process')}) runs Python, but in {window:.1f} s of stack samples of its "
            f"{len(procs)} process(es) no thread was inside a torch DataLoader and none is a DataLoader worker, so "
            "there is no data pipeline to diagnose. If this is the training job, it may be between epochs, "
            "evaluating or saving: attach again with a longer --duration. Under a launcher, give the launcher's "
            "PID or the training process's. Nothing was written.")


_TORCH_VERSION = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.M)


def torch_version_of(record: dict) -> str | None:
    """The target's torch version, read from the version.py beside the torch files in its stacks."""
    for f in (record.get("stacks") or {}).get("frames") or []:
        path = (f.get("file") or "").replace("\\", "/")
        if "/torch/" in path:
            root = path[: path.index("/torch/") + len("/torch/")]
            try:
                with open(os.path.join(root, "version.py"), encoding="utf-8") as fh:
                    m = _TORCH_VERSION.search(fh.read())
                return m.group(1) if m else None
            except OSError:
                return None
    return None


def attach(pid: int, *, duration: float = DEFAULT_DURATION, timeout: float | None = None,
           out: str = DEFAULT_OUT) -> dict:
    """Sample PID's tree for `duration` seconds (the --timeout window when given) and write the
    reports. Returns {report, paths, exit_code}; raises LoaderDoctorError (exit 2) when the PID
    cannot be diagnosed."""
    window = float(timeout) if timeout else float(duration)
    try:
        checked = check_target(pid)
        out = outpaths.check_out_dir(out)  # exit 2 now, before the job is sampled, if it cannot be written
        work = tempfile.mkdtemp(prefix="loaderdoctor-attach-")
        try:
            record = sample_tree(pid, window, work, checked=checked)
            env = envinfo.collect()
            env["torch"] = torch_version_of(record)
            report = build_report(record, environment=env, tool={"name": "loaderdoctor", "version": __version__},
                                  options={"duration": duration, "timeout": timeout, "window": window})
            if not report["attach"]["mains"]:
                raise LoaderDoctorError(_no_dataloader(pid, checked, report), EXIT_USAGE)
            try:
                os.makedirs(out, exist_ok=True)
                spy = os.path.join(work, "pyspy.speedscope.json")
                if os.path.exists(spy):
                    shutil.copyfile(spy, os.path.join(out, "pyspy.speedscope.json"))
            except OSError as exc:
                raise LoaderDoctorError(f"The output directory {out} cannot be written ({exc}). Give another with "
                                        "--out.", EXIT_USAGE) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except SamplerError as e:
        raise LoaderDoctorError(explain(e, pid), EXIT_USAGE) from None

    attach_sources(report)
    paths = {}
    with open(os.path.join(out, "session.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, default=str)
    for fmt in ("json", "md", "html"):
        path = os.path.join(out, f"report.{fmt}")
        with open(path, "w", encoding="utf-8") as f:
            get_renderer(fmt)(report, f)
        paths[fmt] = path
    code = EXIT_HANG if timeout and report["verdict"] == "hang" else EXIT_OK
    return {"report": report, "paths": paths, "exit_code": code}


def format_summary(result: dict) -> str:
    r = result["report"]
    a = r["attach"]
    s = a["sampler"]
    v = r["verdict"]
    lines = [(f"loaderdoctor attach: PID {a['pid']} ({a.get('command')}), {a['window_s']:.1f} s, "
              f"{s.get('samples_per_thread')} samples per thread at {s.get('samples_per_s')}/s; the job was not "
              "paused or changed."),
             f"Verdict: {v} ({VERDICT_TEXT.get(v, '')})."]
    for h in r["hangs"]:
        c, w, ow = h.get("culprit"), h.get("waiting") or {}, h.get("owing_worker")
        rank = f" (rank {h['rank']})" if h.get("rank") is not None else ""
        lines.append(f"  Frozen for the whole window{rank}: the main thread waits on {w.get('text')}"
                     + (f", owed by worker {ow['worker_id']} (pid {ow['pid']})" if ow else "") + ".")
        lines.append(f"  Culprit: {frame_line(c)} in the {c['role']} process (pid {c['pid']})." if c
                     else "  Culprit: no frame in your own code was found in the stacks.")
    if not r["hangs"]:
        b = r["baseline"]
        ci = b.get("data_wait_ci") or [None, None]
        lines.append(f"  Data wait: {pct(b.get('data_wait_fraction'))} of the loop's samples "
                     f"(95% CI {pct(ci[0])}-{pct(ci[1])}, {b.get('stack_samples')} samples).")
        top = next((f for m in a["mains"] for f in m["busiest_worker_frames"]), None)
        if top:
            lines.append(f"  Busiest worker frame: {frame_line(top)}, {pct(top.get('share'))} of worker samples.")
    for fmt in ("html", "md", "json"):
        lines.append(f"Wrote {result['paths'][fmt]}")
    lines.append(f"Next: {a['next_command']}")
    return "\n".join(lines)
