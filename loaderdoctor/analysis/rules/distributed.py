"""Rules for distributed runs, from the ranks table (analysis/ranks.py): straggler-rank,
uneven-shards. Both need at least two ranks measured; neither fires after a hang or a crash
(the hang's own finding names the rank everyone waits for)."""

from __future__ import annotations

import re
from statistics import median

from loaderdoctor.analysis import impact as impact_mod
from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _ms, _pct, _real


def _measured(r: dict) -> list[dict]:
    return [x for x in r.get("ranks") or []
            if (x.get("steps") or 0) >= THRESHOLDS["min_steps"] and x.get("wait_s") is not None
            and x.get("compute_s") is not None]


def _who(x: dict) -> str:
    """"rank 1", or in a merged report "rank 1 (part 0, host)"."""
    if x.get("part") is None:
        return f"rank {x['rank']}"
    return f"rank {x['rank']} (part {x['part']}" + (f", {x['host']})" if x.get("host") else ")")


def straggler(rows: list[dict]) -> dict | None:
    """The rank the others wait for, with the cause, or None. The slowest rank by its own work
    per step (data wait + compute - collective wait) is named when its data wait is >= 2x the
    others' median and >= 50 ms (datapath-doctor's per-rank rule, `distributed.py::
    analyze_distributed`, there against the median of all ranks: with two ranks that median
    would hold the straggler itself, so the others' is used), or when its own work exceeds the
    others' median by >= 50 ms and >= 10% of the step (ours: a compute straggler). Cause: input
    when its data wait exceeds the others' by at least half the gap, compute otherwise."""
    if len(rows) < 2:
        return None
    # Without a collective measure every rank's step (wait + compute) is the same lock-step
    # period: only the data wait tells the ranks apart.
    timed = all(x.get("collective_s") is not None for x in rows)
    own = (lambda x: x["own_s"]) if timed else (lambda x: x["wait_s"] + x["compute_s"])  # noqa: E731
    s = max(rows, key=own if timed else (lambda x: x["wait_s"]))
    others = [x for x in rows if x is not s]
    gap = own(s) - median(own(x) for x in others)
    wait_med = median(x["wait_s"] for x in others)
    excess = s["wait_s"] - wait_med
    step = median(x["step_s"] for x in rows if x.get("step_s")) if any(x.get("step_s") for x in rows) else None
    by_input = s["wait_s"] >= THRESHOLDS["straggler_wait_ratio"] * wait_med and s["wait_s"] >= THRESHOLDS["straggler_wait_s"]
    by_compute = (timed and gap >= THRESHOLDS["straggler_wait_s"] and step is not None
                  and gap >= THRESHOLDS["straggler_gap_share"] * step)
    if not (by_input or by_compute):
        return None
    gap = max(gap, excess)  # without a collective measure the others' own work includes their wait
    cause = "input" if excess >= 0.5 * gap else "compute"
    return {"rank": s, "others": others, "gap": gap, "excess": excess, "wait_median": wait_med,
            "step": step, "cause": cause}


def _impact_line(x: dict) -> str:
    if x.get("collective_s") is not None and x.get("step_s"):
        return (f"{_who(x)} waits {_ms(x['collective_s'])} per step in the gradient all-reduce "
                f"({_pct(x['collective_s'] / x['step_s'])} of its {_ms(x['step_s'])} step)")
    return f"{_who(x)}'s step takes {_ms(x.get('step_s'))} (data wait {_ms(x['wait_s'])})"


def rule_straggler_rank(r: dict) -> list[Finding]:
    if _real(r.get("hangs")) or _real(r.get("crashes")):
        return []
    found = straggler(_measured(r))
    if not found:
        return []
    s, others, gap = found["rank"], found["others"], found["gap"]
    rank = _who(s)[5:]
    share = gap / found["step"] if found["step"] else None
    waits = ", ".join(f"{_who(x)} {_ms(x['wait_s'])}" for x in others)
    evidence = (f"Every rank steps together (DDP), so each step lasts as long as {_who(s)}'s: its own work is "
                f"{_ms(gap)} per step longer than the others' median. Its data wait is {_ms(s['wait_s'])} per step "
                f"against {waits}; its compute {_ms(s['compute_s'])}. Impact: "
                + "; ".join(_impact_line(x) for x in others)
                + f". Cause: {found['cause']} (its data wait exceeds the others' by {_ms(found['excess'])} of the "
                f"{_ms(gap)} gap; a rank is named when its data wait is >= {THRESHOLDS['straggler_wait_ratio']:g}x "
                f"the others' median and >= {1000 * THRESHOLDS['straggler_wait_s']:.0f} ms, datapath-doctor's rule).")
    if found["cause"] == "input":
        fix = (f"Fix rank {rank}'s input, not every rank's: find what differs in its shard or its host (larger or "
               "compressed files, a slower or remote disk, a shard that needs more decoding, CPUs shared with other "
               f"ranks' workers) and make its reads as cheap as the others' (rebalance the shards by cost, "
               f"pre-decode or cache rank {rank}'s files, or give its loader more workers). More workers on every "
               "rank would not help the others: they already wait for it.")
    else:
        fix = (f"Rank {rank} computes longer than the others on the same model: look for work only it does "
               "(logging, evaluation or checkpointing on that rank inside the step), batches of a different shape "
               "(variable-length samples: bucket them by length), or a slower device or a busier host.")
    return [Finding("straggler-rank", "warning", f"Rank {rank} is the straggler: every rank waits for it "
                    f"({found['cause']})", evidence, fix,
                    impact=impact_mod.impact(share, None if share is None else 1000 * gap))]


def rule_uneven_shards(r: dict) -> list[Finding]:
    rows = [x for x in r.get("ranks") or [] if x.get("epoch_batches") or x.get("loader_batches")]
    if len(rows) < 2:
        return []
    counts = {_who(x): (x["epoch_batches"][0] if x.get("epoch_batches") else x["loader_batches"]) for x in rows}
    if len(set(counts.values())) < 2:
        return []
    how = {_who(x): "counted over a complete epoch" if x.get("epoch_batches") else "len(loader)" for x in rows}
    said = ", ".join(f"{k}: {n} ({how[k]})" for k, n in counts.items())
    most = max(counts, key=counts.get)
    return [Finding(
        "uneven-shards", "warning", "Ranks draw different numbers of batches per epoch",
        f"Batches per epoch of the training loader: {said}. The ranks' optimizer steps pair up across epochs: "
        f"{most}'s extra batches are all-reduced with the other ranks' next epoch, and at the end of training "
        f"{most} blocks in an all-reduce nobody joins (a hang that looks like a DataLoader hang).",
        "Give every rank the same number of batches: shard with `DistributedSampler` (it pads the shards to equal "
        "length) instead of a split by rank, or pass `drop_last=True` to both; if the inputs are uneven on purpose, "
        "wrap the loop in DDP's `Join` context manager.")]


def qualify(found: list[Finding]) -> list[Finding]:
    """With a straggler named, the findings read from the baseline speak of that rank only
    (the baseline is its view: analysis/ranks.straggler_first): say so, and make the fix
    about its input, never more workers on every rank. (The experiments' findings are read
    from their own stages, each from rank 0's view.)"""
    s = next((f for f in found if f.id == "straggler-rank"), None)
    if s is None:
        return found
    rank = re.match(r"Rank (.+?) is the straggler", s.title).group(1)
    for f in found:
        if f.id not in ("data-bound", "compute-bound"):
            continue
        f.evidence = f"Rank {rank}'s view (the straggler, the rank every other waits for): {f.evidence}"
        if f.id == "data-bound":
            f.title = f"Rank {rank} waits on data {f.title.split('waits on data ', 1)[-1]}"
            f.fix = (f"Only rank {rank} waits this long for data; the other ranks wait for it in the all-reduce. "
                     f"Fix rank {rank}'s input (see straggler-rank), not the loader settings of every rank.")
    return found
