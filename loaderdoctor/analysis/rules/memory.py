"""worker-memory-growth: a worker's private memory grows through the stage (copy-on-read of
the dataset's Python objects, or a cache), with where the slope leads over an epoch."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _train_loader


def _copy_on_read(r: dict, ds: dict) -> bool:
    """Large Python containers on the dataset, read by forked workers."""
    return bool(ds.get("containers")) and (_train_loader(r) or {}).get("start_method") in ("fork", None)


def _cause(r: dict, ds: dict) -> tuple[str, str]:
    """(cause, fix) from the dataset's Python containers and the start method."""
    big = ds.get("containers") or []
    if _copy_on_read(r, ds):
        what = ", ".join(f"{c['attr']} ({c['type']} of {c['len']:,} items, ~{c['mb']:.0f} MB, ~{c['objects']:,} "
                         "Python objects)" for c in big[:3])
        return (f" Cause: copy-on-read. The dataset holds {what}; forked workers share those pages with the main "
                "process until they touch an item: reading it writes its reference count (and a garbage-collector "
                "pass writes every object's header), so each worker copies, page by page, all it reads.",
                "Hold the items in numpy arrays or an Arrow table (one buffer, no per-item Python object: "
                "e.g. np.array of offsets + one bytes buffer for strings, or pyarrow / pandas with numpy dtypes), "
                "or keep only paths/offsets and read each item in __getitem__. The samples and their order stay "
                "the same; only where they are stored changes.")
    return (" No large Python container was found on the dataset: a cache filled in __getitem__ (functools.lru_cache, "
            "a dict of decoded items) or a leak in the worker is the likely cause.",
            "Bound what __getitem__ keeps between calls (a size-limited cache, or none), or cache before the "
            "workers start (in the main process, in numpy arrays) so it is shared, not grown per worker.")


def _projection_text(p: dict | None, nw: int, limit_from: str | None) -> tuple[str, bool]:
    if not p:
        return "", False
    text = f" With num_workers={nw} that is {p['mb_per_batch']:.2f} MB per batch."
    if p.get("epoch_growth_mb_per_worker") is not None:
        cap = " (capped at the dataset's Python objects: each page is copied once)" if p["capped_at_dataset"] else ""
        text += (f" Over one epoch ({p['epoch_s']:.0f} s at this rate) each worker would add "
                 f"~{p['epoch_growth_mb_per_worker']:.0f} MB{cap}")
        if p.get("epoch_total_mb") is not None:
            text += (f": the tree (main + workers, {p['tree_mb_now']:.0f} MB now) would reach "
                     f"~{p['epoch_total_mb']:.0f} MB against the {p['limit_mb']:.0f} MB {limit_from}")
        text += "."
    if p.get("oom_after_s") is not None:
        text += (f" At this slope the limit is reached after ~{p['oom_after_s']:.0f} s (~{p['oom_after_batches']:,} "
                 "batches), within the first epoch: expect the OOM killer.")
        return text, True
    return text, False


def rule_worker_memory_growth(r: dict) -> list[Finding]:
    data = r.get("data") or {}
    g = data.get("memory") or {}
    fit = g.get("fit")
    if not fit:
        return []
    ds = data.get("dataset") or {}
    nw = (_train_loader(r) or {}).get("num_workers") or g.get("workers") or 0
    proj, oom = _projection_text(g.get("projection"), nw, g.get("limit_from"))
    floor = THRESHOLDS["memory_growth_mb" if _copy_on_read(r, ds) else "memory_growth_unexplained_mb"]
    if not oom and (fit["slope_mb_s"] < THRESHOLDS["memory_growth_mb_s"] or fit["growth_mb"] < floor):
        return []
    cause, fix = _cause(r, ds)
    ev = (f"In the {g.get('stage')} stage, {g['readings']} readings of {g['workers_read']} worker processes' private "
          f"memory (USS) against each worker's age fit a slope of {fit['slope_mb_s']:.1f} MB/s per worker: from "
          f"~{fit['start_mb']:.0f} MB at start-up, +{fit['growth_mb']:.0f} MB over the {fit['age_span_s']:.1f} s "
          f"observed (peak {fit['peak_worker_mb']:.0f} MB in one worker).{proj}{cause}")
    title = f"Each worker's private memory grows {fit['slope_mb_s']:.1f} MB/s" + (
        " and would exhaust memory within an epoch" if oom else "")
    return [Finding("worker-memory-growth", "critical" if oom else "warning", title, ev, fix)]
