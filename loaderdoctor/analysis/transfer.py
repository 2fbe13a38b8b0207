"""Pure: the batch's copy to the GPU, from the "h2d" events (child/h2d.py), and what pinning
the loader's memory did to it (the pin-memory stage).

Per batch the child records the bytes copied to the device, the host's time in the copy
calls, the GPU time between events around them, the bytes that came from pinned memory and
those asked non_blocking. A batch's copy costs the step the larger of its host time (the
host waits: pageable memory goes through a staging buffer) and its GPU time (the copy sits on
the stream the step's kernels run on)."""

from __future__ import annotations

from statistics import median

MIN_BATCHES = 5  # copies of fewer batches than this say nothing


def _copies(events: list[dict], loader: int | None, skip: int) -> list[dict]:
    rows = [e for e in events if e.get("e") == "h2d" and e.get("l") == loader and e.get("bytes")]
    return rows[skip:] if len(rows) > skip + MIN_BATCHES else rows


def summary(events: list[dict], loader: int | None, skip: int, step_s: float | None) -> dict | None:
    """The training loader's copies: medians per batch, the bandwidth, the share of the bytes
    from pinned memory and asked non_blocking, and the copy's share of the median step."""
    rows = _copies(events, loader, skip)
    if len(rows) < MIN_BATCHES:
        return None
    total = sum(r["bytes"] for r in rows)
    gpu = [r.get("gpu") or 0.0 for r in rows]
    host = [r.get("host") or 0.0 for r in rows]
    cost = [max(h, g) for h, g in zip(host, gpu)]
    out = {
        "batches": len(rows),
        "device": next((r.get("device") for r in rows if r.get("device")), None),
        "bytes_per_batch": int(median(r["bytes"] for r in rows)),
        "tensors_per_batch": int(median(r.get("n") or 0 for r in rows)),
        "host_s": round(median(host), 6),
        "gpu_s": round(median(gpu), 6),
        "cost_s": round(median(cost), 6),
        "gb_per_s": round(total / sum(gpu) / 1e9, 2) if sum(gpu) > 0 else None,
        "pinned_share": round(sum(r.get("pinned") or 0 for r in rows) / total, 4),
        "non_blocking_share": round(sum(r.get("nb") or 0 for r in rows) / total, 4),
        "share": None,
    }
    if step_s:
        out["share"] = round(min(1.0, out["cost_s"] / step_s), 4)
    return out


def pinned_comparison(baseline: dict | None, pinned: dict | None, rate_unpinned: float | None,
                      rate_pinned: float | None) -> dict | None:
    """The pin-memory stage against the baseline: the copy's cost per batch from pageable
    memory (the real run) and from pinned memory (the stage: pin_memory=True, non_blocking
    copies of the same loader's batches), and what pinning costs the loader itself (its drain
    rate with and without the pin-memory thread)."""
    if not baseline or not pinned or not baseline.get("cost_s") or pinned.get("cost_s") is None:
        return None
    saved = baseline["cost_s"] - pinned["cost_s"]
    out = {"copy_s_pageable": baseline["cost_s"], "copy_s_pinned": pinned["cost_s"],
           "gb_per_s_pageable": baseline.get("gb_per_s"), "gb_per_s_pinned": pinned.get("gb_per_s"),
           "saved_s": round(saved, 6), "speedup": round(baseline["cost_s"] / pinned["cost_s"], 2)
           if pinned["cost_s"] > 0 else None,
           "rate_unpinned": rate_unpinned, "rate_pinned": rate_pinned, "share_saved": None}
    step = (baseline["cost_s"] / baseline["share"]) if baseline.get("share") else None
    if step:
        out["share_saved"] = round(max(0.0, saved) / step, 4)
    return out


PIN_MIN_SHARE = 0.02  # the baseline's copies must cost this share of the step before pinning is tried
PIN_GAIN = 0.10  # pinned copies must be this much cheaper per batch, and save PIN_MIN_SHARE of the step
PIN_RATE_KEPT = 0.95  # and the loader with the pin-memory thread must keep this share of its rate


def pin_skip_reason(h2d: dict | None, loader: dict) -> str | None:
    """Why the pin-memory stage is not worth its run (None: run it)."""
    if not h2d:
        return "no batch of the training loader was copied to a GPU in the baseline"
    if loader.get("pin_memory"):
        return "the loader already pins its batches (pin_memory=True)"
    if (h2d.get("pinned_share") or 0) >= 0.5:
        return f"{100 * h2d['pinned_share']:.0f}% of the copied bytes already came from pinned memory"
    if (h2d.get("share") or 0) < PIN_MIN_SHARE:
        return (f"the batch's copy to the GPU costs {100 * (h2d.get('share') or 0):.1f}% of the step: pinning "
                "has little to gain")
    return None


def pin_helps(comparison: dict | None) -> bool:
    """Pinning measurably helps: cheaper copies by PIN_GAIN, PIN_MIN_SHARE of the step saved,
    and the loader nearly as fast with its pin-memory thread."""
    c = comparison or {}
    if not c.get("copy_s_pageable") or c.get("copy_s_pinned") is None:
        return False
    if c["copy_s_pinned"] > c["copy_s_pageable"] * (1 - PIN_GAIN) or (c.get("share_saved") or 0) < PIN_MIN_SHARE:
        return False
    lo, hi = c.get("rate_unpinned"), c.get("rate_pinned")
    return not (lo and hi is not None and hi < PIN_RATE_KEPT * lo)
