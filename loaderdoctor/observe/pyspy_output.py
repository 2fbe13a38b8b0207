"""What py-spy prints and writes: its error messages sorted into causes, and its speedscope
file turned into per-thread samples (frames innermost first)."""

from __future__ import annotations

import re

_NO_PTRACE = ("permission denied", "operation not permitted", "os error 1)", "os error 13)")


_NOT_RUNNING = ("check that the process is running", "no such process", "os error 3)")


_NOT_PYTHON = ("failed to find python version", "failed to find python interpreter", "not a python",
               "failed to find a python")


def classify_pyspy_error(text: str) -> str:
    """no-ptrace, not-running, not-python or other, from what py-spy printed."""
    low = (text or "").lower()
    if any(s in low for s in _NO_PTRACE):
        return "no-ptrace"
    if any(s in low for s in _NOT_PYTHON):
        return "not-python"
    if any(s in low for s in _NOT_RUNNING):
        return "not-running"
    return "other"


def first_error_line(text: str) -> str:
    """py-spy's message without its Rust backtrace."""
    for line in (text or "").splitlines():
        s = line.strip()
        if s and not s.startswith(("Stack backtrace", "py-spy>")) and not re.match(r"^\d+:", s):
            return s
    return (text or "").strip()[:200]


_PROFILE = re.compile(r'^(?:Process (\d+) )?Thread (\w+)(?: "(.*)")?\s*$', re.S)


_PROCESS_FRAME = re.compile(r'^process (\d+):', re.S)


def parse_speedscope(doc: dict) -> dict:
    """py-spy's speedscope file -> {frames: [{function, file, line}], threads: [{pid, tid, name,
    samples: [[frame index, innermost first]]}], ancestry: {pid: [pids, outermost first]}}.
    py-spy's pseudo-frames naming the processes (with --subprocesses) become the ancestry."""
    raw = (doc.get("shared") or {}).get("frames") or []
    remap: dict[int, int] = {}
    frames: list[dict] = []
    proc_of: dict[int, int] = {}
    for i, f in enumerate(raw):
        m = _PROCESS_FRAME.match(f.get("name") or "")
        if m and not f.get("line"):
            proc_of[i] = int(m.group(1))
            continue
        remap[i] = len(frames)
        frames.append({"function": f.get("name"), "file": f.get("file"), "line": f.get("line")})
    threads = []
    ancestry: dict[int, list[int]] = {}
    for prof in doc.get("profiles") or []:
        m = _PROFILE.match(prof.get("name") or "")
        pid = int(m.group(1)) if m and m.group(1) else None
        tid_s = m.group(2) if m else None
        try:
            tid = int(tid_s, 0) if tid_s else None
        except ValueError:
            tid = None
        samples = []
        for s in prof.get("samples") or []:
            chain = [proc_of[i] for i in s if i in proc_of]
            if chain and pid is not None and pid not in ancestry:
                ancestry[pid] = chain
            samples.append([remap[i] for i in reversed(s) if i in remap])
        threads.append({"pid": pid, "tid": tid, "name": m.group(3) if m else prof.get("name"), "samples": samples})
    return {"frames": frames, "threads": threads, "ancestry": {str(k): v for k, v in ancestry.items()}}


_COUNTS = re.compile(r"Samples: (\d+) Errors: (\d+)")
