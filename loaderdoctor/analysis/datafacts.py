"""Pure: the "data" block of the report, what the data rules (rules/memory, rules/workers,
rules/startup, rules/reading) read: the training dataset's Python containers, the workers'
memory slope and its projection, per-worker fetches, duplicated or idle streams, the
start-up paid per epoch, the read part of __getitem__, the cached-prefix what-if."""

from __future__ import annotations

from loaderdoctor.analysis import stepstats, workerdata
from loaderdoctor.session import Session

MEMORY_STAGES = ("baseline", "loader-only")  # the real run first, then the loader alone


def _train(r: dict) -> dict:
    return next((l for l in r.get("loaders") or [] if l.get("role") == "train"), {})


def _dataset_event(stage: dict | None, loader: int | None) -> dict:
    for e in (stage or {}).get("events", []):
        if e.get("e") == "ds" and (loader is None or e.get("l") == loader):
            return e
    return {}


def _stage_loader(stage: dict, site: str | None) -> int | None:
    """The index of the training loader in another stage (indices are per stage; the site is not)."""
    for l in stepstats.loaders_from_events(stage.get("events", [])):
        if l.get("site") == site:
            return l["index"]
    by = stepstats.steps_by_loader(stage.get("events", []))
    return stepstats.train_loader(by, stage.get("events", []))


def memory_block(session: Session, r: dict, train: dict, ds: dict) -> dict | None:
    g, name = None, None
    for stage_name in MEMORY_STAGES:
        st = session.stage(stage_name)
        cand = workerdata.memory_growth(st, _stage_loader(st, train.get("site"))) if st else None
        if cand is not None and (g is None or cand.get("fit")):
            g, name = cand, stage_name
        if g and g.get("fit"):
            break
    if not g or not g.get("fit"):
        return g
    nw = train.get("num_workers") or 0
    bs = train.get("batch_size") or 1
    n = train.get("dataset_len")
    env = session.environment
    limits = [x for x in (env.get("cgroup_memory_limit_bytes"), env.get("memory_total_bytes")) if x]
    containers = sum(c.get("mb") or 0 for c in ds.get("containers") or []) or None
    g["stage"] = name
    g["limit_from"] = ("cgroup memory limit" if env.get("cgroup_memory_limit_bytes") and
                       min(limits) == env.get("cgroup_memory_limit_bytes") else "MemTotal") if limits else None
    g["projection"] = workerdata.project(g, nw, -(-n // bs) if n else None, containers, min(limits) if limits else None)
    return g


def epochs_block(session: Session, train: dict) -> dict | None:
    """Per iterator of the training loader in the baseline: the first batch's wait (start-up)
    and the iterator's whole time; the share start-up takes of the epochs after the first."""
    st = session.stage("baseline")
    if not st:
        return None
    idx = _stage_loader(st, train.get("site"))
    ls = stepstats.steps_by_loader(st.get("events", [])).get(idx)
    if ls is None:
        return None
    per: dict[int, dict] = {}
    for s in ls.steps:
        d = per.setdefault(s.iterator, {"startup": None, "time": 0.0, "batches": 0, "closed": True})
        d["batches"] += 1
        if s.first:
            d["startup"] = s.startup if s.startup is not None else s.wait
            d["time"] += d["startup"] + (s.compute or 0.0)
        else:
            d["time"] += s.wait + (s.compute or 0.0)
        if s.compute is None:
            d["closed"] = False
    rows = [per[k] for k in sorted(per)]
    later = [d for d in rows[1:] if d["startup"] is not None and d["closed"]]
    total = sum(d["time"] for d in later)
    return {"iterators": len(rows), "first_startup_s": rows[0]["startup"] if rows else None,
            "first_time_s": rows[0]["time"] if rows else None,
            "later": len(later), "later_startup_s": [round(d["startup"], 4) for d in later[:8]],
            "later_batches": round(sum(d["batches"] for d in later) / len(later), 1) if later else None,
            "restart_share": round(sum(d["startup"] for d in later) / total, 4) if total > 0 else None,
            "restart_s_per_epoch": round(sum(d["startup"] for d in later) / len(later), 4) if later else None,
            "epoch_s": round(total / len(later), 4) if later else None}


def read_block(session: Session, r: dict) -> dict | None:
    """The part of a sample's fetch outside the timed transforms and the collate."""
    st = session.stage("transforms")
    ts = (st or {}).get("tstats")
    pipe = r.get("pipeline") or {}
    if not ts or not ts.get("samples") or not pipe.get("found"):
        return None
    sample_s = ts["fetch_s"] - ts["collate_s"]
    if sample_s <= 0:
        return None
    read_s = max(0.0, sample_s - sum(ts["total"]))
    counts: dict[tuple, int] = {}
    total = 0
    for rf in ts.get("read_frames") or []:
        for f in (rf or {}).get("frames") or []:
            key = (f["function"], f["file"], f["line"])
            counts[key] = counts.get(key, 0) + f["samples"]
        total += (rf or {}).get("samples") or 0
    frames = [{"function": k[0], "file": k[1], "line": k[2], "share": round(n / total, 3)}
              for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3]] if total else []
    return {"read_ms": round(1000 * read_s / ts["samples"], 4), "sample_ms": round(1000 * sample_s / ts["samples"], 4),
            "share": round(read_s / sample_s, 4), "samples": ts["samples"], "frames": frames,
            "frame_samples": total}


def cache_block(session: Session) -> dict | None:
    st = session.stage("transforms")
    return next((e for e in (st or {}).get("events", []) if e.get("e") == "cache_whatif"), None)


def worker_block(session: Session, train: dict) -> dict | None:
    """Per-worker fetches, the slowest worker, identical or idle streams in the baseline."""
    st = session.stage("baseline")
    if not st:
        return None
    ev = st.get("events", [])
    idx = _stage_loader(st, train.get("site"))
    zero = session.stage("workers-0")
    return {"fetches": workerdata.fetch_stats(ev, idx), "slow": workerdata.slow_worker(ev, idx),
            "duplicates": workerdata.duplicates(ev, idx), "idle": workerdata.idle_workers(ev, idx),
            "epoch_samples": workerdata.epoch_samples(ev, idx)[:6],
            "epoch_samples_workers0": workerdata.epoch_samples(zero.get("events", []), None)[:3] if zero else []}


def data_block(session: Session, r: dict) -> dict:
    train = _train(r)
    ds = _dataset_event(session.stage("baseline"), r.get("baseline", {}).get("loader_index"))
    return {"dataset": ds or None, "memory": memory_block(session, r, train, ds), "workers": worker_block(session, train),
            "epochs": epochs_block(session, train), "read": read_block(session, r), "cache": cache_block(session)}
