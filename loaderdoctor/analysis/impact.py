"""Pure: what a finding costs, how severe that is, and the order findings are shown in.

A finding's impact is the share of the training step it costs and those milliseconds per
step. Removing a cost that takes share s of the step can speed the step up by at most
1/(1-s) (Amdahl): the "ceiling" a measured speedup is quoted against. Severity follows
TensorFlow's input-pipeline analyzer (>= 20% of the step "highly", >= 5% "moderately"),
except that a cost of a few milliseconds per step is never more than "info".
"""

from __future__ import annotations

import math
from typing import Any

MAX_SHARE = 0.999  # the ceiling of a share of 1 would be infinite
SEVERITIES = ("critical", "warning", "info")
# Findings that stop training: shown first, whatever the measured shares of the others.
BLOCKING = ("hang", "worker-crash", "worker-oom", "script-error")
CPU_SLACK = 0.10  # CPU% may exceed 100% x effective CPUs by this fraction (sampling jitter)


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def impact(share: float | None, ms_per_step: float | None) -> dict | None:
    """{"share", "ms_per_step", "ceiling"} for a cost taking `share` of the step (clamped to
    [0, 0.999]); ceiling = 1/(1-share) to 2 places. None when the share was not measured."""
    if not _finite(share):
        return None
    s = min(max(float(share), 0.0), MAX_SHARE)
    ms = round(float(ms_per_step), 3) if _finite(ms_per_step) else None
    return {"share": round(s, 4), "ms_per_step": ms, "ceiling": round(1 / (1 - s), 2)}


def severity(impact: dict | None, *, critical: float = 0.20, warning: float = 0.05,
             floor_ms: float = 2.0) -> str:
    """"critical" for a cost of >= `critical` of the step, "warning" for >= `warning`, else
    "info"; a cost under floor_ms milliseconds per step is at most "info". No impact: "info"
    (rules for hangs and crashes set their severity themselves)."""
    if not impact or not _finite(impact.get("share")):
        return "info"
    ms = impact.get("ms_per_step")
    if _finite(ms) and float(ms) < floor_ms:
        return "info"
    s = float(impact["share"])
    if s >= critical:
        return "critical"
    if s >= warning:
        return "warning"
    return "info"


def _key(indexed: tuple[int, dict]) -> tuple:
    i, f = indexed
    fid = f.get("id")
    if fid in BLOCKING:
        return (0, BLOCKING.index(fid), 0.0, 0, i)
    imp = f.get("impact") or {}
    share = float(imp["share"]) if _finite(imp.get("share")) else None
    sev = SEVERITIES.index(f["severity"]) if f.get("severity") in SEVERITIES else len(SEVERITIES)
    if share is None:  # no measured cost: after every finding with one, by severity
        return (2, 0, 0.0, sev, i)
    return (1, 0, -share, sev, i)


def order(findings: list[dict]) -> list[dict]:
    """Findings sorted for the report: hang, worker-crash, worker-oom, script-error first
    (in that order), then by impact share, largest first, then those without a measured
    impact by severity; ties keep the rules' order. Returns a new list."""
    return [f for _, f in sorted(enumerate(findings), key=_key)]


def _x(v: float) -> str:
    """1.8 -> "1.8x", 1.05 -> "1.05x", 2.0 -> "2.0x"."""
    v = float(v)
    return f"{v:.1f}x" if round(v, 1) == round(v, 2) else f"{v:.2f}x"


def headline_ceiling(measured_speedup: float | None, ceiling: float | None) -> str:
    """"1.8x of at most 2.1x"; "at most 2.1x" when nothing was measured, "1.8x" without a
    ceiling, "" with neither."""
    m = _x(measured_speedup) if _finite(measured_speedup) else None
    c = _x(ceiling) if _finite(ceiling) else None
    if m and c:
        return f"{m} of at most {c}"
    if c:
        return f"at most {c}"
    return m or ""


def sane_share(x: Any) -> tuple[bool, str | None]:
    """(True, None) for a share in 0..1 (1e-6 slack for rounding), else (False, why): the
    caller reports a measurement problem instead of a finding."""
    if x is None:
        return False, "not measured"
    if not _finite(x):
        return False, f"share {x!r} is not a number"
    if not -1e-6 <= float(x) <= 1 + 1e-6:
        return False, f"share {float(x):.3f} is outside 0..1"
    return True, None


def sane_cpu_percent(pct: Any, effective_cpus: float | None) -> tuple[bool, str | None]:
    """(True, None) for a CPU use between 0 and 100% x effective CPUs (+10% slack), else
    (False, why). Without a CPU count only the sign is checked."""
    if not _finite(pct):
        return False, f"CPU {pct!r}% is not a number"
    p = float(pct)
    if p < 0:
        return False, f"CPU {p:.0f}% is negative"
    if _finite(effective_cpus) and float(effective_cpus) > 0:
        limit = 100 * float(effective_cpus) * (1 + CPU_SLACK)
        if p > limit:
            return False, (f"CPU {p:.0f}% is above what {float(effective_cpus):g} effective CPUs "
                           f"can give ({limit:.0f}% with slack)")
    return True, None
