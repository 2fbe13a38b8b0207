"""A fast subset of the scenario corpus through benchmarks/score.py (the whole corpus is a
benchmark: `python benchmarks/score.py`)."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fast_subset_scores_full_marks():
    only = "healthy_compute.py,hang_worker_queue.py,worker_bad_sample.py"
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "score.py"), "--fast", "--only", only],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "score: 3/3", res.stdout
    assert sum(line.endswith("right") for line in lines) == 3


def test_judge_catches_a_false_alarm_and_a_missing_finding():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from score import judge

    control = {"verdict": ["compute-bound"], "findings": [], "control": True}
    report = {"verdict": "compute-bound", "findings": [{"id": "too-few-workers", "severity": "warning"}]}
    assert judge(control, report) == (False, "false alarm too-few-workers")
    exp = {"verdict": ["hang"], "findings": ["hang", "fork-unsafe"]}
    assert judge(exp, {"verdict": "hang", "findings": [{"id": "hang", "severity": "critical"}]}) == \
        (False, "missing fork-unsafe")
