"""Pure: the stacks of every rank of a hung distributed job -> the rank and frame everyone
else waits for, and the sentence that says so.

A healthy rank of a stuck job sits in a collective (DDP's gradient all-reduce inside
`loss.backward()`, a barrier, a broadcast): that frame is the symptom every rank but one
shares, never the culprit. The culprit rank is one whose main thread is *not* in a
collective; inside it the single-process rule applies (culprits.find_culprit): a main
waiting for a batch blames the worker sitting in user code.

    rank 0 waits in the gradient all-reduce (backward at train.py:40) for rank 1; rank 1's
    main waits for a batch; its worker 0 (pid 812) is blocked in read_blob at train.py:22
"""

from __future__ import annotations

from loaderdoctor.analysis.culprits import (
    _in_dataloader_wait,
    find_culprit,
    user_frames,
)
from loaderdoctor.frames import ProcessStack, ThreadStack

_COLLECTIVE_FILES = ("torch/distributed/", "torch/nn/parallel/distributed.py", "deepspeed/comm", "torch/_C/_distributed")
_BACKWARD = (("torch/autograd/", ("backward", "_engine_run_backward")), ("torch/_tensor.py", ("backward",)))


def collective(frames: list[dict]) -> str | None:
    """What collective a main thread waits in (innermost first), or None. Backward counts: in
    a job that made no progress for the whole timeout, a backward that does not return is
    DDP's reducer waiting for its all-reduce."""
    for f in frames:
        file = (f.get("file") or "").replace("\\", "/")
        fn = (f.get("function") or "").rsplit(".", 1)[-1]
        if any(s in file for s in _COLLECTIVE_FILES):
            return fn or "a collective"
        for part, names in _BACKWARD:
            if part in file and fn in names:
                return "the gradient all-reduce"
    return None


def _stack(p: dict) -> ProcessStack:
    threads = [ThreadStack(t.get("name"), t.get("frames") or []) for t in p.get("threads") or []]
    if not threads:
        threads = [ThreadStack(p.get("thread") or "MainThread", p.get("frames") or [])]
    return ProcessStack(p["pid"], p["role"], threads)


def _at(f: dict | None) -> str:
    if not f:
        return "an unknown frame"
    return f"{f.get('function')} at {f.get('file')}:{f.get('line')}"


def rank_states(processes: list[dict]) -> dict[int, dict]:
    """Per rank: its main's state (collective | batch | code | unknown), the frame that shows
    it, and the rank's own culprit (find_culprit over its main and workers)."""
    by_rank: dict[int, list[dict]] = {}
    for p in processes:
        if p.get("rank") is not None and p.get("role") in ("main", "worker"):
            by_rank.setdefault(p["rank"], []).append(p)
    out = {}
    for rank, procs in sorted(by_rank.items()):
        main = next((p for p in procs if p["role"] == "main"), None)
        frames = (main or {}).get("frames") or []
        coll = collective(frames)
        uf = user_frames(frames)
        if main is None:
            state = "unknown"
        elif coll:
            state = "collective"
        elif _in_dataloader_wait(frames):
            state = "batch"
        else:
            state = "code"
        c = find_culprit([_stack(p) for p in procs])
        if c is not None:
            w = next((p for p in procs if p["pid"] == c["pid"]), {})
            c = {**c, "rank": rank, **({"worker": w["worker"]} if w.get("worker") is not None else {})}
        out[rank] = {"rank": rank, "state": state, "collective": coll, "frame": uf[0] if uf else None,
                     "pid": (main or {}).get("pid"), "culprit": c}
    return out


def _says(s: dict) -> str:
    rank = s["rank"]
    c = s.get("culprit")
    if s["state"] == "batch":
        text = f"rank {rank}'s main waits for a batch"
        if c and c.get("role") == "worker":
            who = f"worker {c['worker']}" if c.get("worker") is not None else "worker"
            text += f"; its {who} (pid {c.get('pid')}) is blocked in {_at(c)}"
        return text
    if s["state"] == "code":
        return f"rank {rank}'s main is stuck in {_at(c or s.get('frame'))}"
    if s["state"] == "collective":
        return f"rank {rank} waits in {s['collective']} ({_at(s.get('frame'))})"
    return f"rank {rank}: no stack was read"


def dist_culprit(processes: list[dict]) -> dict:
    """{rank, culprit, story, ranks[]} for a hung distributed job. The culprit rank is the
    lowest one whose main is not in a collective; when every rank waits in one, they called
    different collectives or one left the loop (uneven batches): rank 0's frame is named and
    the story says so."""
    states = rank_states(processes)
    if not states:
        return {"rank": None, "culprit": None, "story": "no rank's stack could be read", "ranks": []}
    stuck = [s for s in states.values() if s["state"] != "collective" and s["state"] != "unknown"]
    waiting = [s for s in states.values() if s["state"] == "collective"]
    if stuck:
        blame = stuck[0]
        who = ", ".join(str(s["rank"]) for s in stuck)
        parts = [f"rank {s['rank']} waits in {s['collective']} ({_at(s.get('frame'))}) for rank{'s' if len(stuck) > 1 else ''} {who}"
                 for s in waiting]
        parts += [_says(s) for s in stuck]
        story = "; ".join(parts)
    else:
        blame = min(states.values(), key=lambda s: s["rank"])
        story = ("every rank waits in a collective: " + "; ".join(_says(s) for s in waiting)
                 + ". The ranks called different collectives, or one left the loop (a rank with fewer "
                 "batches, an early exit, an exception caught and ignored)")
    c = blame.get("culprit")
    if c is None and blame.get("frame"):
        c = {"role": "main", "pid": blame.get("pid"), "rank": blame["rank"], **blame["frame"]}
    ranks = [{k: s[k] for k in ("rank", "state", "collective", "frame", "pid")} for s in states.values()]
    return {"rank": blame["rank"], "culprit": c, "story": story, "ranks": ranks}
