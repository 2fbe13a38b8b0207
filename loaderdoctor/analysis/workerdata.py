"""Pure: what the workers' own events ("wf", "wx", "wh", child/workerevents.py) and the
parent's memory readings say about each worker of one loader in one stage.

Clocks: "wf"/"it"/"b" times are seconds on the recorder's clock; the sampler's rows are
seconds since the sampler started. The first batch ties them: the runner writes it at once
and the parent notes when it arrived (the stage's window[0]), so offset = window[0] - its t,
good to a few ms."""

from __future__ import annotations

import bisect
from statistics import median

MB = 2**20


def _of(events: list[dict], kind: str, loader: int | None) -> list[dict]:
    return [e for e in events if e.get("e") == kind and (loader is None or e.get("l") == loader)]


def iterators(events: list[dict], loader: int | None) -> list[dict]:
    """The loader's iterators in order: {t (start), workers [pids]}."""
    return [{"t": e.get("t"), "workers": [p for p in e.get("workers") or [] if p]} for e in _of(events, "it", loader)]


# ---------------------------------------------------------------- memory


def memory_growth(stage: dict, loader: int | None) -> dict | None:
    """The workers' private memory (USS) against their age: one straight line through every
    reading of every worker of the loader (age = seconds since the iterator that started it),
    so workers that live under a second, read once or twice each, still give a slope."""
    events = stage.get("events") or []
    samples = stage.get("samples") or {}
    window = stage.get("window")
    first_b = next(iter(_of(events, "b", loader)), None)
    if not window or first_b is None or first_b.get("t") is None:
        return None
    offset = window[0] - first_b["t"]
    births: dict[int, float] = {}
    for it in iterators(events, loader):
        for pid in it["workers"]:
            births.setdefault(pid, it["t"] + offset)
    # a worker's first batch allocates what every later batch reuses: readings before its
    # first fetch ended are not growth
    first_fetch: dict[int, float] = {}
    for e in _of(events, "wf", loader):
        first_fetch[e["pid"]] = min(first_fetch.get(e["pid"], float("inf")), e["t1"] + offset)
    seen: set[tuple[int, float]] = set()
    points: list[tuple[float, float, int]] = []
    reads = [r for r in samples.get("rows") or [] if r.get("role") == "worker" and r.get("uss")]
    for r in reads + list(samples.get("worker_memory") or []):
        pid, t = r.get("pid"), r.get("t")
        if pid not in births or (pid, t) in seen or t < first_fetch.get(pid, births[pid]) or not r.get("uss"):
            continue  # (a worker that has exited but is not reaped yet reads 0)
        seen.add((pid, t))
        points.append((max(0.0, t - births[pid]), r["uss"] / MB, pid))
    out = {"readings": len(points), "workers_read": len({p for _, _, p in points}), "workers": len(births),
           "tree_mb": _tree_pss(samples.get("rows") or []), "fit": None}
    ages = [a for a, _, _ in points]
    if len(points) < 3 or max(ages) - min(ages) < 0.2:
        return out
    slope, intercept = _line([(a, m) for a, m, _ in points])
    mid = sorted(ages)[len(ages) // 2]
    late = _line([(a, m) for a, m, _ in points if a >= mid])  # still growing, or levelling off?
    span = max(ages)
    b_times = [e["t"] for e in _of(events, "b", loader) if e.get("t") is not None]
    rate = (len(b_times) - 1) / (b_times[-1] - b_times[0]) if len(b_times) > 1 and b_times[-1] > b_times[0] else None
    out["fit"] = {"slope_mb_s": round(slope, 3), "late_slope_mb_s": round(late[0], 3) if late else None,
                  "start_mb": round(intercept, 1), "age_span_s": round(span, 3),
                  "growth_mb": round(slope * span, 1), "peak_worker_mb": round(max(m for _, m, _ in points), 1),
                  "batches_per_s": round(rate, 3) if rate else None}
    return out


def _line(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept), or None with fewer than 2 distinct x."""
    n = len(points)
    if n < 2:
        return None
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var <= 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in points) / var
    return slope, my - slope * mx


def _tree_pss(rows: list[dict]) -> float | None:
    """The main process's and the workers' proportional memory (PSS: shared pages split among
    the processes that map them, so the sum is what the tree holds) at the last full reading."""
    by_t: dict[float, float] = {}
    for r in rows:
        if r.get("role") in ("main", "worker") and r.get("pss"):
            by_t[r["t"]] = by_t.get(r["t"], 0.0) + r["pss"] / MB
    return round(by_t[max(by_t)], 1) if by_t else None


def project(growth: dict, nw: int, batches_per_epoch: int | None, containers_mb: float | None,
            limit_bytes: int | None) -> dict | None:
    """Where the slope leads over one epoch with nw workers: the growth per worker (capped at
    the dataset's Python objects when they are known: copy-on-read copies each page at most
    once), the total, and when it would reach the memory limit."""
    fit = (growth or {}).get("fit")
    if not fit or not fit.get("batches_per_s") or nw <= 0:
        return None
    slope, rate = fit["slope_mb_s"], fit["batches_per_s"]
    mb_per_batch = nw * slope / rate
    epoch_s = batches_per_epoch / rate if batches_per_epoch else None
    per_worker = slope * epoch_s if epoch_s is not None else None
    capped = per_worker is not None and containers_mb is not None and per_worker > containers_mb
    if capped:
        per_worker = containers_mb
    now = growth.get("tree_mb") or nw * fit["peak_worker_mb"]
    out = {"mb_per_batch": round(mb_per_batch, 3), "epoch_s": round(epoch_s, 1) if epoch_s else None,
           "epoch_growth_mb_per_worker": round(per_worker, 1) if per_worker is not None else None,
           "capped_at_dataset": capped, "tree_mb_now": round(now, 1),
           "limit_mb": round(limit_bytes / MB, 1) if limit_bytes else None, "oom_after_s": None,
           "oom_after_batches": None}
    if limit_bytes and per_worker is not None:
        head = limit_bytes / MB - now
        out["epoch_total_mb"] = round(now + nw * per_worker, 1)
        if now + nw * per_worker >= limit_bytes / MB and slope > 0:
            t = max(0.0, head) / (nw * slope)
            out["oom_after_s"] = round(t, 1)
            out["oom_after_batches"] = int(t * rate)
    return out


# ---------------------------------------------------------------- fetches


def fetch_stats(events: list[dict], loader: int | None) -> list[dict]:
    """Per worker process: its id, fetches and fetch time (each worker's first fetch left
    out: it pays the worker's own warm-up)."""
    by: dict[int, list[dict]] = {}
    for e in _of(events, "wf", loader):
        by.setdefault(e["pid"], []).append(e)
    out = []
    for pid, evs in by.items():
        evs.sort(key=lambda e: e.get("t0", 0))
        d = [e["t1"] - e["t0"] for e in evs[1:]] or [evs[0]["t1"] - evs[0]["t0"]]
        out.append({"pid": pid, "w": evs[0].get("w"), "fetches": len(evs), "samples": sum(e.get("n", 1) for e in evs),
                    "median_ms": round(1000 * median(d), 3), "total_s": round(sum(d), 4)})
    out.sort(key=lambda r: (r["w"] if r["w"] is not None else 1 << 30, r["pid"]))
    return out


def wait_by_worker(events: list[dict], loader: int | None) -> dict[int, float]:
    """The main process's wait for each batch, attributed to the worker that fetched it (the
    latest fetch of that batch index that ended before the batch arrived); iterators' first
    batches (start-up) left out."""
    ends: dict[int, list[tuple[float, int]]] = {}
    for e in _of(events, "wf", loader):
        if isinstance(e.get("i"), int):
            ends.setdefault(e["i"], []).append((e["t1"], e["pid"]))
    for v in ends.values():
        v.sort()
    out: dict[int, float] = {}
    for b in _of(events, "b", loader):
        if "s" in b or b.get("t") is None:
            continue
        cand = ends.get(b.get("i"))
        if not cand:
            continue
        k = bisect.bisect_right(cand, (b["t"] + 1e-4, 1 << 62)) - 1
        if k >= 0:
            pid = cand[k][1]
            out[pid] = out.get(pid, 0.0) + b["w"]
    return out


def loop_time(events: list[dict], loader: int | None) -> float:
    """Wait + compute of the loader's batches after each iterator's first."""
    return sum(b["w"] + (b.get("c") or 0.0) for b in _of(events, "b", loader) if "s" not in b)


def slow_worker(events: list[dict], loader: int | None, min_fetches: int = 4) -> dict | None:
    """The slowest worker against the others: its median fetch, theirs, the ratio, and the
    share of the loop's time spent waiting on its batches."""
    rows = [r for r in fetch_stats(events, loader) if r["fetches"] >= min_fetches]
    if len(rows) < 2:
        return None
    slow = max(rows, key=lambda r: r["median_ms"])
    others = [r["median_ms"] for r in rows if r is not slow]
    base = median(others)
    waits = wait_by_worker(events, loader)
    total = loop_time(events, loader)
    steps = sum(1 for b in _of(events, "b", loader) if "s" not in b)
    return {"worker": slow["w"], "pid": slow["pid"], "median_ms": slow["median_ms"], "others_ms": round(base, 3),
            "ratio": round(slow["median_ms"] / base, 2) if base > 0 else None, "workers": len(rows),
            "wait_share": round(waits.get(slow["pid"], 0.0) / total, 4) if total > 0 else None,
            "wait_ms_per_step": round(1000 * waits.get(slow["pid"], 0.0) / steps, 3) if steps else None,
            "per_worker": rows}


# ---------------------------------------------------------------- iterable streams


def duplicates(events: list[dict], loader: int | None) -> dict | None:
    """Workers of one iterator whose first batches were identical (digests of "wh" events); a
    worker whose first batches are all alike (constant data) is not compared."""
    seqs: dict[int, dict[int, str]] = {}
    wid: dict[int, int] = {}
    for e in _of(events, "wh", loader):
        seqs.setdefault(e["pid"], {}).setdefault(e["k"], e["h"])
        wid.setdefault(e["pid"], e.get("w"))
    best = None
    for n_it, it in enumerate(iterators(events, loader)):
        groups: dict[tuple, list[int]] = {}
        for pid in it["workers"]:
            s = seqs.get(pid)
            if s and len(set(s.values())) > 1:  # a constant stream (dummy zeros) tells nothing
                groups.setdefault(tuple(s[k] for k in sorted(s)), []).append(pid)
        same = max(groups.values(), key=len, default=[])
        if len(same) >= 2 and (best is None or len(same) > len(best["pids"])):
            key = next(k for k, v in groups.items() if v is same)
            best = {"iterator": n_it, "pids": same, "workers": sorted(wid.get(p) for p in same if wid.get(p) is not None),
                    "of": len(it["workers"]), "batches_compared": len(key), "digest": key[0]}
    return best


def epoch_samples(events: list[dict], loader: int | None) -> list[int]:
    """Samples each complete iterator (one that ended with "end" why=epoch) delivered."""
    out, cur = [], None
    for e in events:
        if e.get("l") != loader and loader is not None:
            continue
        kind = e.get("e")
        if kind == "it":
            cur = 0
        elif kind == "b" and cur is not None:
            cur += e.get("n", 1)
        elif kind == "end" and cur is not None:
            if e.get("why") == "epoch":
                out.append(cur)
            cur = None
    return out


def idle_workers(events: list[dict], loader: int | None) -> dict | None:
    """Per iterator: the workers that delivered no batch, while the iterator delivered at
    least two batches per worker or the idle ones' streams ended at once ("wx" with n=0)."""
    delivered: dict[int, int] = {}
    for e in _of(events, "wf", loader):
        delivered[e["pid"]] = delivered.get(e["pid"], 0) + 1
    ended_empty = {e["pid"]: e.get("w") for e in _of(events, "wx", loader) if e.get("n") == 0}
    b_by_it: list[int] = []
    for e in events:
        if (loader is None or e.get("l") == loader) and e.get("e") == "it":
            b_by_it.append(0)
        elif (loader is None or e.get("l") == loader) and e.get("e") == "b" and b_by_it:
            b_by_it[-1] += 1
    worst = None
    for n_it, it in enumerate(iterators(events, loader)):
        nw = len(it["workers"])
        if nw < 2:
            continue
        idle = [(k, pid) for k, pid in enumerate(it["workers"]) if not delivered.get(pid)
                and (pid in ended_empty or (n_it < len(b_by_it) and b_by_it[n_it] >= 2 * nw))]
        if idle and len(idle) < nw and (worst is None or len(idle) > len(worst["idle"])):
            worst = {"iterator": n_it, "workers": nw, "idle": [ended_empty.get(pid, k) for k, pid in idle],
                     "active": [k for k, pid in enumerate(it["workers"]) if delivered.get(pid)],
                     "ended_empty": sum(1 for _, pid in idle if pid in ended_empty),
                     "batches": b_by_it[n_it] if n_it < len(b_by_it) else None}
    return worst
