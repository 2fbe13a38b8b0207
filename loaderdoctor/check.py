"""`loaderdoctor check`: the real loop for N steps under the watchdog, nothing else."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET

from loaderdoctor import envinfo
from loaderdoctor.errors import EXIT_CRASH, EXIT_HANG, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, LoaderDoctorError
from loaderdoctor.orchestrate import _never_iterated
from loaderdoctor.render.text import frame_line
from loaderdoctor.report import build_report
from loaderdoctor.session import Session
from loaderdoctor.stage import StageSpec, run_stage
from loaderdoctor.target import Target

STACK_FRAMES_SHOWN = 8


def check(target: Target, *, timeout: float, steps: int = 20, first_batch_timeout: float | None = None,
          out_dir: str = "loaderdoctor-check", stack_method: str = "auto") -> dict:
    os.makedirs(out_dir, exist_ok=True)
    spec = StageSpec(name="check", target=target.path, argv=target.argv, steps=steps, warmup=0, timeout=timeout,
                     first_batch_timeout=first_batch_timeout, stack_method=stack_method)
    res = run_stage(spec, out_dir)
    why = _never_iterated(res) if res.status not in ("interrupted",) else None
    if why:
        raise LoaderDoctorError(why, EXIT_USAGE)
    session = Session(target=target.to_dict(), options={"timeout": timeout, "steps": steps, "warmup": 0},
                      environment=envinfo.collect(), stages=[res.to_dict()], ended=time.time())
    report = build_report(session)
    batches = res.batches
    if res.status == "hang":
        code = EXIT_HANG
    elif res.status in ("crash", "failed"):
        code = EXIT_CRASH
    elif res.status == "interrupted":
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_OK
    return {"exit_code": code, "status": res.status, "detail": res.detail, "seconds": res.seconds,
            "batches": batches, "steps": steps, "target": target.path, "hang": (report["hangs"] or [None])[0],
            "crash": (report["crashes"] or [None])[0], "findings": report["findings"],
            "stack_dir": res.stack_dir, "stderr_path": res.stderr_path}


def _compact_stacks(hang: dict) -> list[str]:
    lines = []
    for p in hang.get("processes") or []:
        lines.append(f"  {p['role']} pid {p['pid']}:")
        frames = p.get("frames") or []
        for f in frames[:STACK_FRAMES_SHOWN]:
            lines.append(f"    {frame_line(f)}")
        if len(frames) > STACK_FRAMES_SHOWN:
            lines.append(f"    ... {len(frames) - STACK_FRAMES_SHOWN} outer frames")
    return lines


def format_result(r: dict) -> str:
    code = r["exit_code"]
    if code == EXIT_OK:
        return (f"loaderdoctor check: healthy. {r['batches']} batches in {r['seconds']:.1f} s, no hang, no crash "
                f"({r['detail']}).")
    lines = []
    if r.get("hang"):
        h = r["hang"]
        c = h.get("culprit")
        lines.append(f"loaderdoctor check: HANG. {r['detail']}.")
        lines.append(f"Culprit: {frame_line(c)} in the {c['role']} process (pid {c['pid']})." if c
                     else "Culprit: no frame in your own code was found in the stacks.")
        why = h.get("py_spy_not_used") if h.get("method") != "py-spy" else None
        lines.append(f"Stacks ({h.get('method')}{f'; py-spy not used: {why}' if why else ''}):")
        lines.extend(_compact_stacks(h))
        lines.append(f"Full stacks: {r['stack_dir']}. Fix the culprit call, or run `loaderdoctor probe` for the "
                     "whole diagnosis.")
    elif r.get("crash"):
        c = r["crash"]
        what = c.get("signal") or c.get("exception_type") or f"exit code {c.get('exit_code')}"
        lines.append(f"loaderdoctor check: CRASH. The {c['role']} process failed: {what}: "
                     f"{(c.get('message') or '').strip()}")
        cul = c.get("culprit")
        lines.append(f"Culprit: {frame_line(cul)}." if cul else "Culprit: no frame in your own code was found.")
        f = next((f for f in r.get("findings") or [] if f["severity"] == "critical"), None)
        if f:
            lines.append(f"Finding {f['id']}: {f['evidence']}")
            lines.append(f"Fix: {f['fix']}")
        lines.append(f"The script's stderr is in {r['stderr_path']}.")
    elif code == EXIT_INTERRUPTED:
        lines.append("loaderdoctor check: interrupted; the script and its workers were ended.")
    else:
        lines.append(f"loaderdoctor check: FAILED. {r['detail']}. The script's stderr is in {r['stderr_path']}.")
    return "\n".join(lines)


def write_junit(r: dict, path: str) -> None:
    suite = ET.Element("testsuite", name="loaderdoctor", tests="1",
                       failures="0" if r["exit_code"] == EXIT_OK else "1", errors="0", time=f"{r['seconds']:.3f}")
    case = ET.SubElement(suite, "testcase", classname="loaderdoctor.check", name=os.path.basename(r["target"]),
                         time=f"{r['seconds']:.3f}")
    if r["exit_code"] != EXIT_OK:
        text = format_result(r)
        fail = ET.SubElement(case, "failure", message=text.splitlines()[0],
                             type="hang" if r.get("hang") else "crash")
        fail.text = text
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def append_step_summary(r: dict, path: str) -> None:
    text = format_result(r)
    head, _, rest = text.partition("\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"### {head}\n\n")
        if rest:
            f.write("```\n" + rest.replace("```", "'''") + "\n```\n\n")
