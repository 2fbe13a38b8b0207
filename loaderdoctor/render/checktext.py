"""`loaderdoctor check`'s result as text: the paragraph printed and the stacks shown."""

from __future__ import annotations

from loaderdoctor.errors import EXIT_INTERRUPTED, EXIT_OK
from loaderdoctor.render.text import frame_line
from loaderdoctor.textsafe import clean

STACK_FRAMES_SHOWN = 8



def _compact_stacks(hang: dict) -> list[str]:
    lines = []
    for p in hang.get("processes") or []:
        of = f" of rank {p['rank']}" if p.get("rank") is not None else ""
        lines.append(f"  {p['role']}{of} pid {p['pid']}:")
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
        rank = f" of rank {c['rank']}" if c and c.get("rank") is not None else ""
        lines.append(f"Culprit: {frame_line(c)} in the {c['role']} process{rank} (pid {c['pid']})." if c
                     else "Culprit: no frame in your own code was found in the stacks.")
        if h.get("story"):  # a distributed run: who waits for whom
            lines.append(f"Ranks: {h['story']}.")
        why = h.get("py_spy_not_used") if h.get("method") != "py-spy" else None
        lines.append(f"Stacks ({h.get('method')}{f'; py-spy not used: {why}' if why else ''}):")
        lines.extend(_compact_stacks(h))
        lines.append(f"Full stacks: {r['stack_dir']}. Fix the culprit call, or run `loaderdoctor probe` for the "
                     "whole diagnosis.")
    elif r.get("crash"):
        c = r["crash"]
        what = c.get("signal") or c.get("exception_type") or f"exit code {c.get('exit_code')}"
        of = f" of rank {c['rank']}" if c.get("rank") is not None else ""
        lines.append(f"loaderdoctor check: CRASH. The {c['role']} process{of} failed: {what}: "
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
    return clean("\n".join(lines))  # user text: no raw escape reaches a terminal or a CI log
