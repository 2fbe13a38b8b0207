"""After the rules: every finding weighed by its impact on the step, noise dropped, one story.

- Severity follows impact (analysis/impact.py): critical when fixing it frees >= 20% of the
  step, warning >= 5%, else info; a cost under 2 ms per step is at most info.
- After a hang or a crash, or with fewer than THRESHOLDS["min_steps_findings"] measured
  steps, throughput findings are noise: none is kept.
- A finding that proposes settings the recommendation did not adopt is kept as info, and its
  fix says why (so no finding advises what the recommendation rejects).
- Ordered: hangs and crashes first, then by impact.
"""

from __future__ import annotations

from loaderdoctor.analysis import impact as impact_mod
from loaderdoctor.analysis.rules import distributed
from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding

THROUGHPUT = ("data-bound", "compute-bound", "too-few-workers", "too-many-workers", "slow-transform",
              "slow-collate", "worker-startup", "epoch-restart", "slow-read", "slow-worker", "cacheable-prefix",
              "h2d-bound", "pin-memory")


def step_ms(r: dict) -> float | None:
    """The median training step in ms (wait and compute), for a share's cost per step."""
    d = (r.get("baseline") or {}).get("step_s") or {}
    return 1000 * d["median"] if d.get("median") else None


def impact_of(share: float | None, r: dict) -> dict | None:
    ms = step_ms(r)
    return impact_mod.impact(share, None if share is None or ms is None else share * ms)


def finalize(found: list[Finding], r: dict, verdict: str, rec: dict) -> list[dict]:
    found = distributed.qualify(found)
    steps = (r.get("baseline") or {}).get("steps") or 0
    noisy = verdict in ("hang", "crash") or steps < THRESHOLDS["min_steps_findings"]
    out = []
    for f in found:
        if noisy and f.id in THROUGHPUT:
            continue
        if f.proposes and any(rec.get(k) != v for k, v in f.proposes.items()):
            f.severity = "info"
            f.fix = f"Not recommended after measuring: {rec.get('basis')}."
        elif f.impact is not None:
            f.severity = impact_mod.severity(f.impact)
        out.append(f.to_dict())
    return impact_mod.order(out)
