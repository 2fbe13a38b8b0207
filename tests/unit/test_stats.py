"""analysis.stats: the interleaved A/B confirm's interval and verdict, sweep spread, choice."""

import math

import numpy as np
import pytest

from loaderdoctor.analysis.stats import (
    cheapest_within_noise,
    pairs_in_budget,
    plan_pairs,
    recommendation_fields,
    speedup_interval,
    spread,
    verdict,
)

# Each pair drifts with the machine (the A rates wander 90..120); B is 1.5x with its own noise.
DRIFT = [100.0, 120.0, 90.0, 110.0, 95.0]
OWN = [1.05, 0.93, 1.10, 0.97, 1.02]


def test_interval_is_deterministic_with_a_seed():
    b = [1.5 * a * o for a, o in zip(DRIFT, OWN)]
    one = speedup_interval(DRIFT, b, seed=7)
    assert one == speedup_interval(DRIFT, b, seed=7)
    assert one["repeats"] == 5 and one["dropped"] == 0 and len(one["ratios"]) == 5
    assert one["ci"][0] <= one["median"] <= one["ci"][1]


def test_clear_speedup_with_noisy_pairs_is_confirmed():
    b = [1.5 * a * o for a, o in zip(DRIFT, OWN)]
    iv = speedup_interval(DRIFT, b)
    assert iv["median"] == pytest.approx(1.5 * 1.02, rel=1e-3)
    assert iv["ci"][0] > 1.02
    assert verdict(iv) == "confirmed"


@pytest.mark.parametrize("seed", range(5))
def test_no_speedup_with_20_percent_noise_is_within_noise(seed):
    rng = np.random.default_rng(seed)
    a = 100 * (1 + 0.2 * rng.standard_normal(5))
    b = a * (1 + 0.2 * rng.standard_normal(5))
    iv = speedup_interval(list(a), list(b))
    assert verdict(iv) == "within-noise"


def test_hand_picked_no_speedup_is_within_noise():
    ratios = [0.85, 1.2, 0.95, 1.15, 0.8]
    iv = speedup_interval(DRIFT, [a * r for a, r in zip(DRIFT, ratios)])
    assert iv["ci"][0] < 1 < iv["ci"][1]
    assert verdict(iv) == "within-noise"
    assert recommendation_fields(iv)["status"] == "within-noise"


def test_failed_runs_are_dropped_and_reported():
    a = [100, None, 100, 100, 100, 100, 100]
    b = [150, 150, float("nan"), 151, 149, 152, 150]
    iv = speedup_interval(a, b)
    assert iv["dropped"] == 2 and iv["repeats"] == 5
    assert all(math.isfinite(r) for r in iv["ratios"])
    assert verdict(iv) == "confirmed"


def test_paired_runs_must_match():
    with pytest.raises(ValueError):
        speedup_interval([1, 2], [1])


def test_slower_and_not_measured():
    slow = speedup_interval(DRIFT, [0.7 * a for a in DRIFT])
    assert verdict(slow) == "slower"
    assert recommendation_fields(slow)["status"] == "within-noise"  # CONTRACT has no "slower"
    one = speedup_interval([100], [150])
    assert one["median"] == 1.5 and one["ci"] is None and verdict(one) == "not-measured"
    none = speedup_interval([None], [150])
    assert none["median"] is None and none["dropped"] == 1 and verdict(none) == "not-measured"
    assert verdict(None) == "not-measured"
    assert recommendation_fields(None) == {"measured_speedup": None, "speedup_ci": None,
                                           "repeats": 0, "status": "not-measured"}


def test_recommendation_fields_confirmed():
    iv = speedup_interval(DRIFT, [1.5 * a * o for a, o in zip(DRIFT, OWN)])
    f = recommendation_fields(iv)
    assert f["status"] == "confirmed" and f["repeats"] == 5
    assert f["measured_speedup"] == iv["median"] and f["speedup_ci"] == iv["ci"]


def test_unpaired_interval():
    iv = speedup_interval([100, 102, 98], [150, 149, 151, None], paired=False)
    assert iv["median"] == pytest.approx(1.5)
    assert iv["dropped"] == 1 and iv["repeats"] == 3 and not iv["paired"]
    assert verdict(iv) == "confirmed"


def test_spread():
    s = spread([100, 110, None, 90, 105, 95])
    assert s["n"] == 5 and s["median"] == 100
    assert s["iqr"] == [95, 105]
    assert s["cv"] == pytest.approx(np.std([100, 110, 90, 105, 95], ddof=1) / 100, abs=1e-4)
    assert spread([]) == {"median": None, "iqr": None, "cv": None, "n": 0}
    assert spread([7])["cv"] is None


def _noisy(level, n=5, noise=0.10, seed=0):
    rng = np.random.default_rng(seed)
    return list(level * (1 + noise * rng.standard_normal(n)))


def test_cheapest_within_noise_picks_fewer_workers():
    two = {"config": {"num_workers": 2}, "rates": _noisy(100, seed=1)}
    four = {"config": {"num_workers": 4}, "rates": _noisy(103, seed=2)}
    assert cheapest_within_noise([four, two], key_cost=lambda c: c["num_workers"]) is two
    assert cheapest_within_noise([four, two]) is two  # the default cost: fewest workers


def test_cheapest_within_noise_keeps_a_clear_win():
    two = {"config": {"num_workers": 2}, "rates": [100, 101, 99, 100]}
    four = {"config": {"num_workers": 4}, "rates": [150, 151, 149, 150]}
    assert cheapest_within_noise([two, four]) is four


def test_cheapest_within_noise_without_rates():
    assert cheapest_within_noise([{"config": {"num_workers": 1}, "rates": [None]}]) is None
    one = {"config": {"num_workers": 1}, "rates": [100]}
    assert cheapest_within_noise([one, {"config": {"num_workers": 0}, "rates": []}]) is one


def test_single_measurements_use_the_two_percent_rule():
    a = {"config": {"num_workers": 2}, "rates": [99]}
    b = {"config": {"num_workers": 4}, "rates": [100]}
    c = {"config": {"num_workers": 8}, "rates": [80]}
    assert cheapest_within_noise([c, b, a]) is a
    d = {"config": {"num_workers": 2}, "rates": [90]}
    assert cheapest_within_noise([d, b]) is b


def test_plan_pairs_is_balanced_shuffled_and_seeded():
    p = plan_pairs(10, seed=3)
    assert len(p) == 10 and set(p) <= {"AB", "BA"} and p.count("AB") == 5
    assert p == plan_pairs(10, seed=3)
    assert len({tuple(plan_pairs(10, seed=s)) for s in range(10)}) > 1
    odd = plan_pairs(5, seed=1)
    assert len(odd) == 5 and abs(odd.count("AB") - odd.count("BA")) == 1
    assert plan_pairs(0) == []
    with pytest.raises(ValueError):
        plan_pairs(-1)


def test_pairs_in_budget():
    assert pairs_in_budget(100, 5) == 10
    assert pairs_in_budget(60, 5) == 6
    assert pairs_in_budget(20, 5) == 2
