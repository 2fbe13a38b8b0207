"""Rules on the work inside the workers: slow-transform, slow-collate."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _loader_matters
from loaderdoctor.analysis.rules.weigh import impact_of


def rule_slow_transform(r: dict) -> list[Finding]:
    rows = [t for t in r.get("transforms") or [] if t.get("share") is not None]
    if not rows or not _loader_matters(r):
        return []
    top = max(rows, key=lambda t: t["share"])
    if top["share"] < THRESHOLDS["slow_transform_share"]:
        return []
    ranked = ", ".join(f"{t['name']} {100 * t['share']:.0f}%" for t in sorted(rows, key=lambda t: -t["share"]))
    info = r.get("pipeline") or {}
    return [Finding("slow-transform", "warning",
                    f"{top['name']} takes {100 * top['share']:.0f}% of each sample's time",
                    f"Timed inside the loader's processes over the full pipeline ({info.get('path')}): "
                    f"{top['name']} (step {top['position']}) costs {top['ms_per_sample']:.2f} ms per sample of "
                    f"{info.get('sample_ms')} ms. Shares: {ranked}.",
                    f"Make {top['name']} cheaper (a vectorised or native implementation, smaller inputs), cache its "
                    "output if it is deterministic, or run it on the GPU after the batch is loaded.",
                    impact=impact_of(top["share"] * _wait(r), r))]


def rule_slow_collate(r: dict) -> list[Finding]:
    c = r.get("collate")
    if not c or c["share"] < THRESHOLDS["slow_collate_share"] or not _loader_matters(r):
        return []
    return [Finding("slow-collate", "warning", f"Collating takes {100 * c['share']:.0f}% of the data time",
                    f"collate_fn took {c['ms_per_batch']:.2f} ms per batch, {100 * c['share']:.0f}% of the time "
                    "the loader's processes spent fetching (samples + collate).",
                    "Return arrays/tensors from __getitem__ (not Python lists or dicts of scalars), collate with "
                    "torch.stack on pre-allocated tensors, or use batched reads (__getitems__).",
                    impact=impact_of(c["share"] * _wait(r), r))]


def _wait(r: dict) -> float:
    """The step's data-wait share: a part of the pipeline costs the step at most its share of it."""
    return (r.get("baseline") or {}).get("data_wait_fraction") or 0.0
