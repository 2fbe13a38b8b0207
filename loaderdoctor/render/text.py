"""Small wording helpers shared by the renderers (no measuring, no I/O)."""

from __future__ import annotations

VERDICT_TEXT = {
    "data-bound": "the training step waits on the data loader for a large share of its time",
    "compute-bound": "the data loader keeps up; the model step is what takes the time",
    "balanced": "data wait is noticeable but not dominant",
    "hang": "a stage stopped making progress; the stacks show where",
    "crash": "a worker or the script failed; the culprit is below",
    "inconclusive": "the measurements do not decide; see what was measured below",
}


def _number(x) -> bool:
    """A figure to format (a report from an older version may lack a field: "n/a", never an error)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def ms(x) -> str:
    return f"{1000 * x:.1f} ms" if _number(x) else "n/a"


def pct(x) -> str:
    return f"{100 * x:.1f}%" if _number(x) else "n/a"


def num(x, digits: int = 1) -> str:
    return f"{x:,.{digits}f}" if _number(x) else "n/a"


def dist(d: dict | None, key: str) -> str:
    return "n/a" if not d else ms(d.get(key))


def frame_line(f: dict) -> str:
    return f"{f.get('function')} ({f.get('file')}:{f.get('line')})"


def baseline_method(r: dict) -> dict | None:
    """The reference row of the start-methods table: the baseline run as the script wrote it."""
    base = next((s for s in r.get("stages") or [] if s["name"] == "baseline"), None)
    if base is None:
        return None
    train = next((l for l in r.get("loaders") or [] if l.get("role") == "train"), {})
    method = train.get("start_method") or f"default ({(r.get('environment') or {}).get('start_method_default')})"
    return {"method": f"baseline: {method}", "status": base["status"], "detail": base.get("detail")}


def gpu_lines(r: dict) -> list[str]:
    """The baseline's GPU side in sentences: the GPU-idle gap at the batch boundaries, the
    batch's copy to the device, and what the pin-memory stage measured."""
    b = r.get("baseline") or {}
    out = []
    idle = b.get("gpu_idle")
    if idle:
        out.append(f"GPU idle at the batch boundaries: {pct(idle.get('fraction'))} of the step time (median gap "
                   f"{dist(idle.get('gap_s'), 'median')} over {idle.get('boundaries')} boundaries, from CUDA events).")
    h = b.get("h2d")
    if h:
        rate = f", {h['gb_per_s']:.1f} GB/s" if h.get("gb_per_s") else ""
        out.append(f"Copy to {h.get('device')}: {h['bytes_per_batch'] / 2**20:.1f} MB per batch, {ms(h.get('gpu_s'))} on "
                   f"the GPU{rate}, the host {ms(h.get('host_s'))} in the copy calls: {pct(h.get('share'))} of the step; "
                   f"pinned {pct(h.get('pinned_share'))}, non_blocking {pct(h.get('non_blocking_share'))}.")
    p = r.get("pin_memory")
    if p:
        out.append(f"With pin_memory=True (pin-memory stage, {p.get('num_workers')} workers): {ms(p.get('copy_s_pinned'))} "
                   f"per batch's copy against {ms(p.get('copy_s_pageable'))}; the loader alone {num(p.get('rate_pinned'))} "
                   f"samples/s against {num(p.get('rate_unpinned'))} unpinned "
                   f"({'pinning helps' if p.get('helps') else 'no measurable gain: not recommended'}).")
    return out
