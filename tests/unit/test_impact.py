"""analysis.impact: a finding's cost, its severity, the findings' order, sanity checks."""

import math

import pytest

from loaderdoctor.analysis.impact import (
    headline_ceiling,
    impact,
    order,
    sane_cpu_percent,
    sane_share,
    severity,
)


def test_impact_and_ceiling():
    assert impact(0.5, 12.3456) == {"share": 0.5, "ms_per_step": 12.346, "ceiling": 2.0}
    assert impact(0.3, None) == {"share": 0.3, "ms_per_step": None, "ceiling": 1.43}
    assert impact(None, 5.0) is None
    assert impact(float("nan"), 5.0) is None


def test_share_is_clamped():
    assert impact(1.0, 3)["share"] == 0.999 and impact(1.0, 3)["ceiling"] == 1000.0
    assert impact(-0.2, 3) == {"share": 0.0, "ms_per_step": 3.0, "ceiling": 1.0}


@pytest.mark.parametrize("share, ms, expected", [
    (0.015, 0.49, "info"),
    (0.3, 10.0, "critical"),
    (0.1, 1.0, "info"),  # 10% of a short step, but under the 2 ms floor
    (0.1, 10.0, "warning"),
    (0.2, None, "critical"),
    (0.049, 50.0, "info"),
])
def test_severity(share, ms, expected):
    assert severity(impact(share, ms)) == expected


def test_severity_thresholds_and_no_impact():
    assert severity(impact(0.1, 10), critical=0.08) == "critical"
    assert severity(impact(0.1, 1.5), floor_ms=1.0) == "warning"
    assert severity(None) == "info"


def _f(fid, share=None, sev="info"):
    return {"id": fid, "severity": sev, "impact": None if share is None else impact(share, 10)}


def test_order_puts_a_hang_first():
    fs = [_f("slow-transform", 0.6, "critical"), _f("too-few-workers", 0.3, "critical"),
          _f("noisy-machine"), _f("hang", None, "critical"), _f("slow-collate", 0.1, "warning")]
    assert [f["id"] for f in order(fs)] == ["hang", "slow-transform", "too-few-workers",
                                            "slow-collate", "noisy-machine"]
    assert fs[0]["id"] == "slow-transform"  # a new list; the input is left alone


def test_order_blocking_findings_in_their_order_then_severity_without_impact():
    fs = [_f("script-error"), _f("data-bound", 0.9, "critical"), _f("worker-oom"), _f("hang"),
          _f("worker-crash"), _f("fd-limit", None, "info"), _f("shm-small", None, "critical")]
    assert [f["id"] for f in order(fs)] == ["hang", "worker-crash", "worker-oom", "script-error",
                                            "data-bound", "shm-small", "fd-limit"]


def test_order_is_stable_for_ties():
    fs = [_f("a", 0.2), _f("b", 0.2), _f("c", 0.2)]
    assert [f["id"] for f in order(fs)] == ["a", "b", "c"]


def test_headline_ceiling():
    assert headline_ceiling(1.8, 2.1) == "1.8x of at most 2.1x"
    assert headline_ceiling(1.05, 1.43) == "1.05x of at most 1.43x"
    assert headline_ceiling(None, 2.0) == "at most 2.0x"
    assert headline_ceiling(1.8, None) == "1.8x"
    assert headline_ceiling(None, None) == ""


def test_sane_share():
    assert sane_share(0.0) == (True, None) and sane_share(1.0) == (True, None)
    for bad in (1.2, -0.1, math.nan, None, "x"):
        ok, why = sane_share(bad)
        assert not ok and why


def test_sane_cpu_percent():
    assert sane_cpu_percent(180.0, 2) == (True, None)
    assert sane_cpu_percent(219.0, 2) == (True, None)  # within the 10% slack
    ok, why = sane_cpu_percent(230.0, 2)
    assert not ok and "2 effective CPUs" in why
    assert not sane_cpu_percent(-5, 2)[0]
    assert not sane_cpu_percent(None, 2)[0]
    assert sane_cpu_percent(900.0, None) == (True, None)  # no CPU count: only the sign
