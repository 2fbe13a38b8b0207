"""Independent checks of a Chrome trace-event object (what Perfetto and chrome://tracing need,
and what loaderdoctor's trace promises). Shared by tests/unit and tests/e2e."""

from __future__ import annotations

import json
import math


def problems(trace: dict) -> list[str]:
    """Everything wrong with `trace`; empty when it keeps every guarantee."""
    out = []
    try:
        json.dumps(trace, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return [f"not JSON-serialisable: {exc}"]
    events = trace.get("traceEvents")
    if not isinstance(events, list):
        return ["no traceEvents list"]
    if trace.get("displayTimeUnit") not in ("ms", "ns"):
        out.append("displayTimeUnit missing")
    named_procs, named_threads, used = set(), set(), set()
    tracks: dict[tuple, list] = {}
    for n, e in enumerate(events):
        ph = e.get("ph")
        if not isinstance(e.get("pid"), int) or not isinstance(e.get("tid"), int):
            out.append(f"event {n}: pid/tid not integers: {e}")
            continue
        if ph == "M":
            if e.get("name") == "process_name":
                named_procs.add(e["pid"])
            elif e.get("name") == "thread_name":
                named_threads.add((e["pid"], e["tid"]))
            continue
        ts = e.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
            out.append(f"event {n}: bad ts {ts!r}")
            continue
        if ph == "C":  # a counter belongs to its process: values are finite numbers
            args = e.get("args")
            if not isinstance(args, dict) or not args or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in args.values()):
                out.append(f"event {n}: counter without finite numeric values: {args!r}")
            if e["pid"] not in named_procs:
                out.append(f"event {n}: counter before its process_name")
            continue
        used.add((e["pid"], e["tid"]))
        if ph == "X":
            dur = e.get("dur")
            if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not math.isfinite(dur) or dur < 0:
                out.append(f"event {n}: bad dur {dur!r}")
                continue
            tracks.setdefault((e["pid"], e["tid"]), []).append((ts, ts + dur, e.get("name"), n))
        elif ph == "i":
            if e.get("s") not in ("g", "p", "t"):
                out.append(f"event {n}: instant without a scope")
        else:
            out.append(f"event {n}: unexpected phase {ph!r}")
    for track, spans in tracks.items():
        spans.sort()
        for a, b in zip(spans, spans[1:]):
            if b[0] < a[1]:
                out.append(f"track {track}: {a[2]!r} [{a[0]}, {a[1]}] overlaps {b[2]!r} [{b[0]}, {b[1]}]")
    for pid, tid in used:
        if pid not in named_procs:
            out.append(f"process {pid} has no process_name")
        if (pid, tid) not in named_threads:
            out.append(f"track {(pid, tid)} has no thread_name")
    return out


def thread_names(trace: dict) -> dict[tuple, str]:
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"]
            if e.get("ph") == "M" and e.get("name") == "thread_name"}


def spans(trace: dict, name: str | None = None, pid: int | None = None, track: str | None = None) -> list[dict]:
    """X events, in ts order, filtered by name, process and track name."""
    names = thread_names(trace)
    return sorted((e for e in trace["traceEvents"] if e.get("ph") == "X"
                   and (name is None or e["name"] == name) and (pid is None or e["pid"] == pid)
                   and (track is None or names.get((e["pid"], e["tid"])) == track)), key=lambda e: e["ts"])


def closed_batches(events: list[dict]) -> set[tuple]:
    """(loader, iterator, batch) of every batch whose compute the events closed (the next
    batch's "c" or the iterator's "end"): a superset of the measured steps."""
    out, pending, iterators = set(), {}, {}
    for ev in events:
        kind, l = ev.get("e"), ev.get("l")
        if kind == "it":
            iterators[l] = iterators.get(l, 0) + 1
            pending.pop(l, None)
        elif kind == "b":
            first = "s" in ev
            if first and not iterators.get(l):
                iterators[l] = 1
            prev = pending.get(l)
            if prev is not None and not first and ev.get("c") is not None:
                out.add(prev)
            pending[l] = (l, max(0, iterators.get(l, 1) - 1), ev.get("i", 0))
        elif kind == "end":
            prev = pending.pop(l, None)
            if prev is not None and ev.get("c") is not None:
                out.add(prev)
    return out


def key(span: dict) -> tuple:
    a = span["args"]
    return (a["loader"], a["iterator"], a["batch"])
