"""Rules on the batch's copy to the GPU: h2d-bound, pin-memory (analysis/transfer.py)."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _mb, _pct
from loaderdoctor.analysis.rules.weigh import impact_of


def _copy_text(h: dict) -> str:
    rate = f" ({h['gb_per_s']:.1f} GB/s)" if h.get("gb_per_s") else ""
    return (f"each batch copies {_mb(h['bytes_per_batch'])} in {h['tensors_per_batch']} tensor(s) to {h.get('device')}: "
            f"median {1000 * h['gpu_s']:.2f} ms on the GPU{rate}, the host held {1000 * h['host_s']:.2f} ms in the "
            f"copy calls; {_pct(h['pinned_share'])} of the bytes came from pinned memory, {_pct(h['non_blocking_share'])} "
            f"were copied with non_blocking=True ({h['batches']} batches of the baseline)")


def rule_h2d_bound(r: dict) -> list[Finding]:
    b = r.get("baseline") or {}
    h = b.get("h2d")
    if not h or h.get("share") is None or h["share"] < THRESHOLDS["h2d_share"]:
        return []
    pinned, nb = h["pinned_share"] >= 0.5, h["non_blocking_share"] >= 0.5
    if not pinned:
        fix = ("Pin the batches (DataLoader(..., pin_memory=True)) and move them with "
               "`.to(device, non_blocking=True)`: pinned copies skip the staging buffer and let the host go on.")
    elif not nb:
        fix = ("The batches are pinned but copied synchronously: move them with `.to(device, non_blocking=True)` "
               "so the host queues the copy and goes on to the step.")
    else:
        fix = ("The copy is already pinned and asynchronous: send fewer bytes (uint8 images, normalised and cast on "
               "the GPU; crop before the copy), or copy the next batch on a side CUDA stream while this one trains.")
    return [Finding("h2d-bound", "warning", f"The copy of each batch to the GPU takes {_pct(h['share'])} of the step",
                    f"In the real run {_copy_text(h)}; that is {_pct(h['share'])} of the median step.",
                    fix, impact=impact_of(h["share"], r))]


def rule_pin_memory(r: dict) -> list[Finding]:
    p = r.get("pin_memory") or {}
    h = (r.get("baseline") or {}).get("h2d")
    if not p.get("helps") or not h:
        return []
    rates = ""
    if p.get("rate_unpinned") and p.get("rate_pinned"):
        rates = (f"; the loader alone delivered {p['rate_pinned']:.0f} samples/s with the pin-memory thread against "
                 f"{p['rate_unpinned']:.0f} without")
    speed = f", {p['speedup']:.1f}x faster" if p.get("speedup") else ""
    return [Finding("pin-memory", "warning", "Pinned memory makes the copy to the GPU measurably cheaper",
                    f"In the real run {_copy_text(h)}. With pin_memory=True and non_blocking copies "
                    f"(pin-memory stage, {p.get('num_workers')} workers) a batch's copy cost "
                    f"{1000 * p['copy_s_pinned']:.2f} ms against {1000 * p['copy_s_pageable']:.2f} ms{speed}: "
                    f"{_pct(p.get('share_saved'))} of the step{rates}.",
                    "DataLoader(..., pin_memory=True), and move the batch with `.to(device, non_blocking=True)` "
                    "(Lightning already passes non_blocking=True; with Accelerate set "
                    "DataLoaderConfiguration(non_blocking=True)).",
                    impact=impact_of(p.get("share_saved"), r), proposes={"pin_memory": True})]
