"""Chrome trace-event JSON from a raw session: opens in Perfetto and chrome://tracing.

Input is session.json's content; nothing is measured here. Layout: one process per stage
(pid = the stage's ordinal, 1-based) with these thread tracks:

  stage                 one span covering the stage; hang / crash / failure instants
  start-up              each iterator's start: __iter__ until its first batch arrived
  main                  per batch: "data wait", then "compute" (one track per loader
                        when the stage iterated several: "main · loader L")
  worker <pid>          per-worker fetch spans ("wf" events), only where recorded

and counter tracks from the parent's samples: system CPU %, and per GPU NVML's utilisation, SM
clock, memory, power and PCIe throughput (on the batches' clock: the two meet at the first
batch).

Times: a batch event's "t" (seconds since the runner's recorder started, at the batch's
arrival) when present, else a timeline rebuilt from its iterator's "t" plus the waits and
computes in order. A stage starts at its "started" (time.time()) when known, else right
after the previous stage. Guarantees: no two spans on one track overlap (a span that would
is clamped to start where its predecessor ends, and counted in otherData), timestamps are
non-negative integers in microseconds, everything is JSON-serialisable.
"""

from __future__ import annotations

import json
import math
import re
from typing import TextIO

MAX_BATCHES = 20_000  # per stage; past it, batches are kept by striding
MAX_COUNTER_SAMPLES = 5_000  # per stage (~17 min at 5 Hz); past it, samples are kept by striding
_TID_STAGE, _TID_STARTUP, _TID_LOADER = 1, 2, 10  # + 1000 x pid: tids unique across the trace
_ROUNDING_US = 3
_TB_FRAME = re.compile(r'^\s*File "(.*)", line (\d+), in (.+)$')
_LIB_PARTS = ("site-packages", "dist-packages", "/lib/python", "/loaderdoctor/", "<frozen", "<string>")


def _num(x) -> float | None:
    """A finite float, or None (a NaN/inf that session.json may hold is never written)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _us(seconds: float) -> int:
    return max(0, int(round(seconds * 1e6)))


class _Tracks:
    """Spans of one stage, written in time order per track, clamped so none overlaps its
    predecessor on the same track, and kept inside the stage (never before its start)."""

    def __init__(self, out: list, pid: int, start_us: int):
        self.out = out
        self.pid = pid
        self.start_us = start_us
        self.last_end: dict[int, int] = {}
        self.clamped = 0
        self.end_us = start_us

    def span(self, tid: int, name: str, t0_us: int, t1_us: int, args: dict, cname: str | None = None) -> None:
        t0_us, t1_us = max(t0_us, self.start_us), max(t1_us, self.start_us)
        prev = self.last_end.get(tid)
        if prev is not None and t0_us < prev:
            # a few µs are the events' own rounding (6 decimals): adjusted, not counted
            self.clamped += prev - t0_us > _ROUNDING_US
            t0_us = prev
        t1_us = max(t1_us, t0_us)
        self.last_end[tid] = t1_us
        self.end_us = max(self.end_us, t1_us)
        ev = {"ph": "X", "name": name, "pid": self.pid, "tid": tid, "ts": t0_us, "dur": t1_us - t0_us, "args": args}
        if cname:
            ev["cname"] = cname
        self.out.append(ev)


def _meta(pid: int, tid: int, kind: str, args: dict) -> dict:
    return {"ph": "M", "name": kind, "pid": pid, "tid": tid, "args": args}


def _is_user(file: str | None) -> bool:
    return bool(file) and not any(p in file for p in _LIB_PARTS)


def _culprit(stage: dict) -> dict | None:
    """Where a crash points, read from the raw record: the innermost user frame of a worker's
    traceback quoted in the exception message, else of the script's own traceback, else the
    first frame of a fatal-signal dump. (analysis/ names culprits properly; the trace only
    labels the instant.)"""
    exc = (stage.get("exit") or {}).get("exc") or {}
    msg = exc.get("message") or ""
    if "DataLoader worker" in msg:
        frames = [m.groups() for m in map(_TB_FRAME.match, msg.splitlines()) if m]
        for file, line, fn in reversed(frames):  # a Python traceback lists the innermost last
            if _is_user(file):
                return {"role": "worker", "pid": None, "function": fn, "file": file, "line": int(line)}
    for f in exc.get("frames") or []:  # innermost first
        if _is_user(f.get("file")):
            return {"role": "main", "pid": None, **{k: f.get(k) for k in ("function", "file", "line")}}
    for d in stage.get("fatal_dumps") or []:
        if d.get("frames"):
            f = d["frames"][0]
            return {"role": d.get("role"), "pid": d.get("pid"), "error": d.get("error"),
                    **{k: f.get(k) for k in ("function", "file", "line")}}
    return None


def _worker_fetches(events: list, tr, names: dict, worker_loader: dict, us) -> None:
    """Per-worker fetch spans ("wf" events), on the worker's own track, in time order."""
    fetches: dict[int, list] = {}
    for ev in events:
        if ev.get("e") == "wf" and isinstance(ev.get("pid"), int):
            t0, t1 = _num(ev.get("t0")), _num(ev.get("t1"))
            if t0 is not None and t1 is not None:
                fetches.setdefault(ev["pid"], []).append((t0, max(t0, t1), ev))
    for n, wpid in enumerate(sorted(fetches)):
        wtid = wpid if wpid not in names else wpid + 10_000_000  # a worker's track is keyed by its pid
        label = f"worker {wpid}" + (f" (loader {worker_loader[wpid]})" if wpid in worker_loader else "")
        names[wtid] = (label, 1000 + n)
        for t0, t1, ev in sorted(fetches[wpid], key=lambda x: x[0]):
            tr.span(wtid, "fetch", us(t0), us(t1), {"batch": ev.get("i"), "transform": ev.get("tr"), "pid": wpid})


def _instants(stage: dict, tr, tids: dict, last: float, last_loader, us) -> list:
    """A hang (with the span of no progress before it) or a crash, failure or interruption:
    instant events at the time progress stopped."""
    status = stage.get("status")
    hang = stage.get("hang")
    instants = []
    if status == "hang" or hang:
        hang = hang or {}
        idle = _num(hang.get("idle_s")) or 0.0
        progress_us = max(tr.last_end.values(), default=us(last))  # the last thing that happened
        at_us = progress_us + _us(idle)
        if last_loader in tids:
            tid = tids[last_loader]
            tr.span(tid, "no progress (hang)", tr.last_end.get(tid, progress_us), at_us, {"idle_s": idle},
                    "terrible")
        instants.append(("hang", at_us, {"culprit": hang.get("culprit"), "idle_s": idle,
                                         "method": hang.get("method"),
                                         "waiting_first_batch": hang.get("waiting_first_batch"),
                                         "detail": stage.get("detail")}))
    elif status in ("crash", "failed", "interrupted"):
        exc = (stage.get("exit") or {}).get("exc") or {}
        at_us = max(tr.last_end.values(), default=us(last))
        instants.append((status, at_us, {"culprit": _culprit(stage) if status == "crash" else None,
                                         "detail": stage.get("detail"), "exception_type": exc.get("type"),
                                         "message": (exc.get("message") or "")[:2000] or None,
                                         "returncode": stage.get("returncode")}))
    return instants


def _stage_trace(stage: dict, pid: int, start_s: float, max_batches: int, out: list) -> dict:
    """Append one stage's events to `out`; returns {end_s, clamped, stride, batches, timeline}.

    Long because one pass over the events keeps each loader's pending batch, its cursor and the
    downsampling stride together; split up, that state would have to travel between functions."""
    events = stage.get("events") or []
    start_us = _us(start_s)
    tr = _Tracks(out, pid, start_us)
    base = 1000 * pid
    hello = next((e for e in events if e.get("e") == "hello"), {})
    # The recorder starts in the runner right after `import torch`; what came before it
    # (the interpreter's own start) is not recorded, so the recorder's zero is an estimate.
    zero = start_s + (_num(hello.get("torch_import_s")) or 0.0)

    def us(t: float) -> int:
        return _us(zero + t)

    batches = [e for e in events if e.get("e") == "b"]
    loaders = sorted({e.get("l") for e in batches if isinstance(e.get("l"), int)})
    stride = -(-len(batches) // max_batches) if len(batches) > max_batches else 1
    tids: dict[int, int] = {l: base + _TID_LOADER + k for k, l in enumerate(loaders)}
    names = {base + _TID_STAGE: ("stage", 0), base + _TID_STARTUP: ("start-up", 1)}
    for k, (l, tid) in enumerate(tids.items()):
        names[tid] = ("main" if len(loaders) == 1 else f"main · loader {l}", 2 + k)

    state: dict = {}  # loader -> {it_t, cursor, iterators, pending}
    worker_loader: dict[int, int] = {}
    measured_t = rebuilt = 0
    last = 0.0  # latest progress, recorder seconds
    last_loader = loaders[0] if loaders else None
    k = 0
    for ev in events:
        kind, l = ev.get("e"), ev.get("l")
        if kind == "it":
            st = state.setdefault(l, {"iterators": 0, "pending": None})
            st.update(it_t=_num(ev.get("t")), cursor=_num(ev.get("t")), pending=None)
            st["iterators"] += 1
            for w in ev.get("workers") or []:
                if isinstance(w, int):
                    worker_loader[w] = l
        elif kind == "b" and l in tids:
            st = state.setdefault(l, {"iterators": 1, "pending": None, "it_t": None, "cursor": None})
            first = "s" in ev
            w, c, s, t = (_num(ev.get(x)) for x in ("w", "c", "s", "t"))
            w = max(0.0, w or 0.0)
            prev = st["pending"] if not first else None
            if prev is not None and c is not None:
                c = max(0.0, c)
                if prev["keep"]:
                    tr.span(tids[l], "compute", us(prev["at"]), us(prev["at"] + c), prev["args"], "good")
            if t is not None:
                at = t
                measured_t += 1
            else:
                rebuilt += 1
                if first and s is not None and st.get("it_t") is not None:
                    at = st["it_t"] + max(s, w)
                elif prev is not None:
                    at = prev["at"] + (c or 0.0) + w
                else:
                    at = (st.get("cursor") if st.get("cursor") is not None else last) + w
            it_k = max(0, st["iterators"] - 1)
            args = {"loader": l, "iterator": it_k, "batch": ev.get("i", 0), "samples": ev.get("n")}
            keep = k % stride == 0
            k += 1
            if first and it_k % stride == 0:
                t_it = st.get("it_t") if st.get("it_t") is not None else at - (s if s is not None else w)
                tr.span(base + _TID_STARTUP, "worker start-up", us(t_it), us(at),
                        {"loader": l, "iterator": it_k, "startup_s": s,
                         "workers": [p for p, wl in worker_loader.items() if wl == l]})
            if keep:
                tr.span(tids[l], "data wait", us(at - w), us(at), {**args, "wait_ms": round(w * 1e3, 3)}, "bad")
            st["pending"] = {"at": at, "keep": keep, "args": args}
            st["cursor"] = at
            last, last_loader = max(last, at), l
        elif kind == "end" and l in state:
            st = state[l]
            prev, c = st["pending"], _num(ev.get("c"))
            if prev is not None and c is not None:
                if prev["keep"]:
                    tr.span(tids[l], "compute", us(prev["at"]), us(prev["at"] + max(0.0, c)), prev["args"], "good")
                st["cursor"] = prev["at"] + max(0.0, c)
                last = max(last, st["cursor"])
            st["pending"] = None

    _worker_fetches(events, tr, names, worker_loader, us)
    _counters(stage, batches, pid, start_s, us, out)
    instants = _instants(stage, tr, tids, last, last_loader, us)
    status = stage.get("status")

    seconds = _num(stage.get("seconds")) or 0.0
    end_us = max(start_us + _us(seconds), tr.end_us, *(at for _, at, _ in instants))
    tr.span(base + _TID_STAGE, f"stage {stage.get('name')}", start_us, end_us,
            {"status": status, "detail": stage.get("detail"), "seconds": seconds,
             "batches": len(batches), "timeline": "measured" if not rebuilt else
             ("rebuilt" if not measured_t else "mixed")})
    for name, at_us, args in instants:
        out.append({"ph": "i", "s": "p", "name": name, "pid": pid, "tid": base + _TID_STAGE, "ts": at_us,
                    "args": args})

    out.append(_meta(pid, 0, "process_name", {"name": str(stage.get("name"))}))
    out.append(_meta(pid, 0, "process_sort_index", {"sort_index": pid}))
    out.append(_meta(pid, 0, "process_labels", {"labels": str(status)}))
    used = {e["tid"] for e in out if e.get("pid") == pid and e["ph"] in ("X", "i")}
    for tid, (name, sort) in names.items():
        if tid in used:
            out.append(_meta(pid, tid, "thread_name", {"name": name}))
            out.append(_meta(pid, tid, "thread_sort_index", {"sort_index": sort}))
    return {"end_s": end_us / 1e6, "clamped": tr.clamped, "stride": stride, "batches": len(batches),
            "timeline": "measured" if not rebuilt else ("rebuilt" if not measured_t else "mixed")}


_COUNTERS = {"util": "util %", "sm_mhz": "SM clock MHz", "mem_mb": "memory MB", "power_w": "power W",
             "pcie_rx_mb_s": "PCIe to GPU MB/s", "pcie_tx_mb_s": "PCIe from GPU MB/s"}


def _counters(stage: dict, batches: list[dict], pid: int, start_s: float, us, out: list) -> None:
    """The parent's samples as counter tracks: system CPU % and, per GPU, NVML's utilisation, SM
    clock, memory, power and PCIe throughput. The sampler's clock meets the recorder's at the
    first batch (the parent noted its arrival as the stage's window[0]); without one, samples
    are placed from the stage's start."""
    system = ((stage.get("samples") or {}).get("system")) or []
    window = stage.get("window") or []
    first_t = next((_num(b.get("t")) for b in batches if _num(b.get("t")) is not None), None)
    w0 = _num(window[0]) if window else None

    def at(t: float) -> int:
        ts = us(t - w0 + first_t) if w0 is not None and first_t is not None else _us(start_s + t)
        return max(ts, _us(start_s))  # a sample from before the recorder's zero: at the stage's start

    stride = -(-len(system) // MAX_COUNTER_SAMPLES) if len(system) > MAX_COUNTER_SAMPLES else 1
    for row in system[::stride]:
        t = _num(row.get("t"))
        if t is None:
            continue
        cpu = _num(row.get("cpu"))
        if cpu is not None:
            out.append({"ph": "C", "name": "system CPU %", "pid": pid, "tid": 0, "ts": at(t), "args": {"cpu %": cpu}})
        gpus: dict[str, dict] = {}
        for key, v in row.items():
            m = re.match(r"^gpu(\d+)_(.+)$", key)
            if m and m.group(2) in _COUNTERS and _num(v) is not None:
                gpus.setdefault(m.group(1), {})[_COUNTERS[m.group(2)]] = _num(v)
        for idx, args in sorted(gpus.items()):
            out.append({"ph": "C", "name": f"GPU {idx}", "pid": pid, "tid": 0, "ts": at(t), "args": args})


def build_trace(session: dict, *, max_batches: int = MAX_BATCHES) -> dict:
    """The Chrome trace-event object for one session (see the module's docstring)."""
    stages = [s for s in session.get("stages") or [] if isinstance(s, dict)]
    starts = [_num(s.get("started")) for s in stages]
    known = [x for x in starts if x is not None]
    origin = None
    if known:
        origin = min(known)
        if _num(session.get("started")) is not None:
            origin = min(origin, session["started"])
    out: list[dict] = []
    other: dict = {"tool": "loaderdoctor", "version": str((session.get("tool") or {}).get("version", "")),
                   "target": str((session.get("target") or {}).get("path", "")), "clamped_spans": 0,
                   "stage_offsets": "started" if len(known) == len(stages) else
                   ("end to end" if not known else "started where known, else end to end"),
                   "recorder_zero": "stage start + the runner's torch import time (the interpreter's start "
                                    "before it is not recorded)"}
    notes, timelines = [], []
    cursor = 0.0
    for k, stage in enumerate(stages):
        start = starts[k] - origin if starts[k] is not None and origin is not None else cursor
        info = _stage_trace(stage, k + 1, max(0.0, start), max_batches, out)
        cursor = max(cursor, info["end_s"])
        other["clamped_spans"] += info["clamped"]
        timelines.append(f"{stage.get('name')}: {info['timeline']}")
        if info["stride"] > 1:
            notes.append(f"{stage.get('name')}: {info['batches']} batch events, 1 in {info['stride']} kept")
    other["timeline"] = "; ".join(timelines)
    other["downsampled"] = "; ".join(notes) if notes else "no"
    skipped = [f"{s.get('name')} ({s.get('reason')})" for s in session.get("skipped") or [] if isinstance(s, dict)]
    if skipped:
        other["skipped_stages"] = "; ".join(skipped)
    meta = [e for e in out if e["ph"] == "M"]
    timed = sorted((e for e in out if e["ph"] != "M"), key=lambda e: (e["pid"], e["ts"], e["ph"] != "X"))
    return {"traceEvents": meta + timed, "displayTimeUnit": "ms", "otherData": other}


def render(session: dict, stream: TextIO) -> None:
    json.dump(build_trace(session), stream, separators=(",", ":"), default=str, allow_nan=False)
    stream.write("\n")
