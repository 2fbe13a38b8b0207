"""The attach section of report.md (report.html includes templates/attach.html.j2): what the
stack samples of a live job show. Rendering only: every number comes from the report dict."""

from __future__ import annotations

from typing import TextIO

from loaderdoctor.render.mdtable import _cell, _table
from loaderdoctor.render.text import frame_line, num, pct


def _ci(ci) -> str:
    return f"{pct(ci[0])}-{pct(ci[1])}" if ci else "n/a"


def markdown_section(r: dict, out: TextIO) -> None:

    a = r.get("attach") or {}
    s = a.get("sampler") or {}
    out.write("## Attach: what the live job's stacks show\n\n")
    out.write(f"PID {a.get('pid')}, sampled for {num(a.get('window_s'))} s without pausing or changing it. "
              f"Next: `{_cell(a.get('next_command'))}`\n\n")
    _table(out, ["pid", "rank", "loop thread", "samples", "in the DataLoader", "95% CI", "state", "waits on",
                 "CPU %", "RSS MB"],
           [[m["pid"], m.get("rank"), m.get("thread"), m["samples"], pct(m.get("data_wait_fraction")),
             _ci(m.get("data_wait_ci")), m.get("state"),
             (f"{m['waiting']['text']}: {frame_line(m['waiting']['frame'])}" if m.get("waiting") and
              m["waiting"].get("frame") else None), m.get("cpu_pct"), m.get("rss_mb")] for m in a.get("mains") or []])
    workers = [(m["pid"], w) for m in a.get("mains") or [] for w in m.get("workers") or []]
    if workers:
        out.write("### Workers\n\n")
        _table(out, ["pid", "worker", "of main", "samples", "busy", "CPU %", "RSS MB", "USS MB", "ctx switches/s",
                     "progress"],
               [[w["pid"], w.get("worker_id"), mp, w["samples"], pct(w.get("busy_share")), w.get("cpu_pct"),
                 w.get("rss_mb"), w.get("uss_mb"), w.get("ctx_voluntary_per_s"),
                 ("yes: " if w.get("progressed") else "no: ") + (w.get("why") or "")] for mp, w in workers])
    frames = [f for m in a.get("mains") or [] for f in m.get("busiest_worker_frames") or []]
    if frames:
        out.write("### Busiest frames inside the workers\n\n")
        _table(out, ["frame", "samples", "share of worker samples"],
               [[frame_line(f), f.get("samples"), pct(f.get("share"))] for f in frames])
    step = [f for m in a.get("mains") or [] for f in m.get("busiest_loop_frames") or []]
    if step:
        out.write("### Busiest frames of the training loop outside the DataLoader (the step)\n\n")
        _table(out, ["frame", "samples", "share of loop samples"],
               [[frame_line(f), f.get("samples"), pct(f.get("share"))] for f in step])
    out.write("### How this was measured\n\n")
    out.write(f"{_cell(s.get('method'))}. {s.get('samples_per_thread')} samples per thread "
              f"({s.get('samples_per_s')}/s, asked {s.get('rate_hz')} Hz), {s.get('errors')} sampling errors; "
              f"py-spy record used {pct((s.get('pyspy_cpu_pct_of_core') or 0) / 100)} of a core, all py-spy runs "
              f"{s.get('pyspy_all_cpu_s')} s of CPU, loaderdoctor itself {s.get('self_cpu_s')} s; "
              f"{s.get('late_ticks')} late psutil readings of {s.get('ticks')}. {_cell(a.get('ci_note'))} "
              "Thresholds: data-bound at a data-wait share of "
              f"{pct((a.get('thresholds') or {}).get('data_bound_fraction'))}, compute-bound under "
              f"{pct((a.get('thresholds') or {}).get('compute_bound_fraction'))}.\n\n")
    procs = a.get("processes") or []
    if procs:
        _table(out, ["pid", "parent", "role", "command", "samples", "CPU %", "RSS MB"],
               [[p["pid"], p.get("ppid"), p.get("role"), p.get("command"), p.get("samples"), p.get("cpu_pct"),
                 p.get("rss_mb")] for p in procs])
