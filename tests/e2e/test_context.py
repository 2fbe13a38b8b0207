"""Context probes on real scripts: start methods, main guard, pickling, a real small /dev/shm."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import CLI_TIMEOUT, run_cli, script

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]


def probe(tmp_path, name, *args):
    res = run_cli("probe", script(name), "--out", str(tmp_path), "-q", "--timeout", "3",
                  "--first-batch-timeout", "5", *args, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads((tmp_path / "report.json").read_text())


def _methods(r):
    return {row["method"]: row["status"] for row in r["start_methods"]}


def test_lock_held_at_fork_is_fork_unsafe_and_other_methods_pass(tmp_path):
    r = probe(tmp_path, "fork_lock.py", "--stages", "baseline,context", "--", "fork")
    assert _methods(r) == {"fork": "hang", "spawn": "ok", "forkserver": "ok"}
    f = next(f for f in r["findings"] if f["id"] == "fork-unsafe")
    assert "metrics-flusher" in f["evidence"]
    # the baseline, as the script wrote it, is the table's reference row
    assert '<tr class="ref"><td>baseline: fork</td><td>hang</td>' in (tmp_path / "report.html").read_text()
    assert "| baseline: fork | hang |" in (tmp_path / "report.md").read_text()


def test_missing_main_guard_under_spawn_is_spawn_unsafe(tmp_path):
    r = probe(tmp_path, "no_main_guard.py", "--stages", "baseline,context")
    assert _methods(r)["fork"] == "ok" and _methods(r)["spawn"] == "crash"
    f = next(f for f in r["findings"] if f["id"] == "spawn-unsafe")
    assert "No `if __name__" in f["title"] and "re-run" in f["title"]
    assert "no_main_guard.py:16" in f["evidence"] and "iterated a DataLoader" in f["evidence"]  # the line that would train


def test_lambda_in_the_pipeline_names_its_attribute_path(tmp_path):
    r = probe(tmp_path, "lambda_transform.py", "--stages", "baseline,context")
    f = next(f for f in r["findings"] if f["id"] == "spawn-unsafe")
    assert f["title"].startswith("dataset.transform.transforms[1] cannot be pickled")
    assert "lambda" in f["evidence"]
    assert r["verdict"] != "crash"  # the real run (fork) is fine: the experiment's failure is not the verdict


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_a_real_small_dev_shm_is_shm_small_with_the_arithmetic(tmp_path):
    # A private mount namespace with a 4 MB tmpfs over /dev/shm: the probe and torch see it.
    cmd = (f"mount -t tmpfs -o size=4M tmpfs /dev/shm && {sys.executable} -m loaderdoctor probe "
           f"{script('big_batches.py')} --out {tmp_path} -q --stages baseline --timeout 5")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd], capture_output=True,
                         text=True, timeout=CLI_TIMEOUT)
    if "mount:" in res.stderr and "permission denied" in res.stderr.lower():
        pytest.skip("this machine does not allow a private mount namespace")
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    f = next(f for f in r["findings"] if f["id"] == "shm-small")
    assert f["severity"] == "critical"
    assert "/dev/shm holds 4.0 MB" in f["evidence"] and "2 workers x prefetch_factor 2 x 8.0 MB per batch" in f["evidence"]
    assert "= 32.0 MB" in f["evidence"]
