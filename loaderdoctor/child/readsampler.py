"""Where the read part of __getitem__ spends its time (slow-read), sampled in the transforms
stage's timed drain only.

A daemon thread in each process that fetches (the workers, or the runner with num_workers=0)
looks at the main thread's Python stack every INTERVAL_S. A sample counts as *read* when the
stack is inside a fetch (the timing wrapper `fetch` of child/pipeline.py) and not inside a
timed transform, the collate or the timing's own bookkeeping (any other function of
child/pipeline.py on the way there): that is
reading, decoding, and whatever else __getitem__ does outside the pipeline. The innermost
Python frame of each such sample is counted; the top few go to the stage's tstats file.

Cost: one sys._current_frames() and a walk of one stack, 50 times a second, in the
transforms stage only."""

from __future__ import annotations

import os
import sys
import threading

INTERVAL_S = 0.02
TOP = 3

_counts: dict[tuple[str, str, int], int] = {}
_state = {"read": 0, "fetch": 0, "started": False}


def _classify(frame, pipeline_file: str) -> tuple[str, tuple[str, str, int] | None]:
    """("read" | "transform" | "idle", innermost frame) of one stack."""
    innermost = frame
    f = frame
    while f is not None:
        code = f.f_code
        if code.co_filename == pipeline_file:
            if code.co_name == "fetch":
                c = innermost.f_code
                return "read", (c.co_name, c.co_filename, innermost.f_lineno)
            return "transform", None  # a timed step, the collate, or the timing's own bookkeeping
        f = f.f_back
    return "idle", None


def _run(main_ident: int, pipeline_file: str, stop: threading.Event) -> None:
    while not stop.wait(INTERVAL_S):
        frame = sys._current_frames().get(main_ident)
        if frame is None:
            return
        kind, where = _classify(frame, pipeline_file)
        del frame
        if kind != "idle":
            _state["fetch"] += 1
        if kind == "read" and where is not None:
            _state["read"] += 1
            _counts[where] = _counts.get(where, 0) + 1


def start(pipeline_file: str) -> None:
    """Start sampling this process's main thread (once per process); pipeline_file is
    child/pipeline.py, whose wrappers tell fetching from transforming."""
    if _state["started"]:
        return
    _state["started"] = True
    t = threading.Thread(target=_run, args=(threading.main_thread().ident, pipeline_file, threading.Event()),
                         name="loaderdoctor-read-sampler", daemon=True)
    t.start()


def top() -> dict:
    """The most frequent innermost frames of the read samples, with their share of them."""
    total = _state["read"]
    ranked = sorted(_counts.items(), key=lambda kv: -kv[1])[:TOP]
    return {"samples": total, "fetch_samples": _state["fetch"], "interval_s": INTERVAL_S, "pid": os.getpid(),
            "frames": [{"function": fn, "file": file, "line": line, "samples": n,
                        "share": round(n / total, 3) if total else None} for (fn, file, line), n in ranked]}
