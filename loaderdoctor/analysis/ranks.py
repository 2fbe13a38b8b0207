"""Pure: a distributed stage's events, rank by rank -> the ranks table (report.json `ranks`).

A stage of a distributed run keeps one rank's events in `events` (what every single-process
analysis reads) and the others' in `rank_events` (orchestrate/distwatch.settle). Per rank:
its measured steps, data wait, compute, and the time it waited in collectives.

Collective time, as measured here: DDP all-reduces gradients inside `loss.backward()`, so a
rank's backward time (summed per optimizer step by the runner: child/distrank.py) is its own
gradient work plus its wait for the slowest peer. Every rank runs the same model on batches of
the same shape, so the fastest rank's backward is taken as the work and the excess of each
rank's median over it as its collective wait (`collective_s`; `collective_method` says so).
With no backward timed (a loop that never calls backward, a torch without the hook) it is
null. `compute_s` is everything between two batches (forward, backward with the wait,
optimizer): the loader's view, as in the baseline; `own_s` = wait + compute - collective is
the rank's own work per step, what the straggler rule compares.
"""

from __future__ import annotations

from statistics import median
from typing import Callable

COLLECTIVE_METHOD = "backward time above the fastest rank's (DDP all-reduces inside backward)"


def rank_views(stage: dict | None) -> list[tuple[int, list[dict]]]:
    """[(rank, events)] of a distributed stage, by rank; [] for a single-process stage."""
    if not stage or stage.get("rank") is None:
        return []
    views = [(int(stage["rank"]), stage.get("events") or [])]
    views += [(int(r), evs) for r, evs in (stage.get("rank_events") or {}).items()]
    return sorted(views, key=lambda v: v[0])


def _med(xs: list[float]) -> float | None:
    return round(median(xs), 6) if xs else None


def epoch_batches(events: list[dict], loader: int | None) -> list[int]:
    """Batches drawn in each complete epoch (an iterator that ended by exhaustion) of a loader."""
    out, n = [], None
    for ev in events:
        if ev.get("l") != loader:
            continue
        kind = ev.get("e")
        if kind == "it":
            n = 0
        elif kind == "b":
            n = (n or 0) + 1
        elif kind == "end" and ev.get("why") == "epoch" and n:
            out.append(n)
            n = None
    return out


def expected_batches(cfg: dict | None) -> int | None:
    """len(loader) from its configuration, when the sampler is torch's plain one (a
    DistributedSampler's shard length is not in the configuration)."""
    cfg = cfg or {}
    n, bs = cfg.get("dataset_len"), cfg.get("batch_size")
    sampler = cfg.get("sampler") or ""
    if not n or not bs or not sampler.endswith(("SequentialSampler", "RandomSampler")):
        return None
    return n // bs if cfg.get("drop_last") else -(-n // bs)


def _backward(events: list[dict], loader: int | None, skip: int) -> list[float]:
    ks = [ev["k"] for ev in events if ev.get("e") == "o" and ev.get("l") == loader and ev.get("k") is not None]
    return ks[skip:] if len(ks) > skip else ks


def rank_row(rank: int, events: list[dict], summarize: Callable[[list[dict]], dict], warmup: int) -> dict:
    """One rank's row. `summarize` is report.stage_block's step summary of these events."""
    block = summarize(events)
    s, idx = block["summary"], block["train_index"]
    hello = next((e for e in events if e.get("e") == "hello"), {})
    cfg = next((l for l in block["loaders"] if l["index"] == idx), None)
    d = lambda key: (s.get(key) or {}).get("median")  # noqa: E731
    return {
        "rank": rank, "local_rank": hello.get("local_rank"), "node_rank": hello.get("node_rank"),
        "host": hello.get("host"), "pid": hello.get("pid"),
        "steps": s.get("steps") or 0, "samples_per_s": s.get("samples_per_s"),
        "data_wait_fraction": s.get("data_wait_fraction"), "wait_s": d("wait_s"), "compute_s": d("compute_s"),
        "step_s": d("step_s"), "backward_s": _med(_backward(events, idx, warmup)), "collective_s": None,
        "own_s": None, "epoch_batches": epoch_batches(events, idx), "loader_batches": expected_batches(cfg),
        "num_workers": (cfg or {}).get("num_workers"),
    }


def fill_collective(rows: list[dict]) -> list[dict]:
    """collective_s (a rank's median backward above the fastest rank's) and own_s, in place."""
    bws = [r["backward_s"] for r in rows if r.get("backward_s") is not None]
    floor = min(bws) if len(bws) >= 2 else None
    for r in rows:
        if floor is not None and r.get("backward_s") is not None:
            r["collective_s"] = round(max(0.0, r["backward_s"] - floor), 6)
            r["collective_method"] = COLLECTIVE_METHOD
        if r.get("wait_s") is not None and r.get("compute_s") is not None:
            r["own_s"] = round(r["wait_s"] + r["compute_s"] - (r.get("collective_s") or 0.0), 6)
    return rows


def rank_rows(stage: dict | None, summarize: Callable[[list[dict]], dict], warmup: int) -> list[dict]:
    """The ranks table of one stage (the baseline): [] unless it ran distributed."""
    rows = fill_collective([rank_row(rank, evs, summarize, warmup) for rank, evs in rank_views(stage)])
    for x in rows:  # the rank whose events the single-process blocks (baseline, loaders) describe
        x["primary"] = x["rank"] == stage.get("rank")
    return rows


def straggler_first(stage: dict | None, summarize: Callable[[list[dict]], dict], warmup: int) -> dict | None:
    """The stage seen from its straggler (rules/distributed.straggler), when one is named and
    the stage ended well: in a job whose ranks step together, the straggler's steps are the
    job's, so its view is the baseline (the verdict and the loader's findings speak of it).
    Otherwise the stage as it was kept (rank 0's view, or the rank a hang or crash blames)."""
    from loaderdoctor.analysis.rules.common import THRESHOLDS
    from loaderdoctor.analysis.rules.distributed import straggler

    if not stage or stage.get("rank") is None or stage.get("status") != "ok":
        return stage
    rows = [x for x in rank_rows(stage, summarize, warmup)
            if x.get("steps", 0) >= THRESHOLDS["min_steps"] and x.get("wait_s") is not None
            and x.get("compute_s") is not None]
    found = straggler(rows)
    if not found or found["rank"]["rank"] == stage["rank"]:
        return stage
    views = dict(rank_views(stage))
    rank = found["rank"]["rank"]
    return {**stage, "rank": rank, "events": views.pop(rank),
            "rank_events": {str(r): evs for r, evs in views.items()}}


def baseline_from_straggler(session, summarize: Callable[[list[dict]], dict], warmup: int):
    """The session with its baseline seen from the straggler (straggler_first); the same
    session when there is none or the run was not distributed."""
    import dataclasses

    base = session.stage("baseline")
    view = straggler_first(base, summarize, warmup)
    if view is base:
        return session
    return dataclasses.replace(session, stages=[view if s is base else s for s in session.stages])
