"""benchmarks/gpu_check.py's plumbing, on the CPU (--dry-run): it runs the real stages end to
end and writes every key the GPU run will; the numbers themselves mean little here."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "benchmarks", "gpu_check.py")


def _run(*args, timeout):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, CHECK, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


def test_dry_run_writes_every_key(tmp_path):
    out = tmp_path / "res" / "gpu_check.json"
    res = _run("--dry-run", "--out", str(out), timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Wrote" in res.stdout and "(a) round 1" in res.stdout
    r = json.loads(out.read_text())
    for key in ("gpu_name", "overhead_ratio", "data_wait_error", "nvml_samples", "torch", "cuda", "rounds",
                "model", "data_bound", "errors", "wall_s"):
        assert key in r, key
    assert r["dry_run"] is True and r["errors"] == []
    assert r["overhead_ratio"] > 0 and len(r["rounds"]) == 2
    for row in r["rounds"]:
        assert row["plain_steps_per_s"] > 0 and row["instrumented_steps_per_s"] > 0
        assert row["instrumented"]["status"] == "ok"
    db = r["data_bound"]
    assert db["status"] == "ok" and db["steps"] == 12 and db["known_wait_s"] == pytest.approx(0.02)
    # the sleeps are a floor for the measured wait; a busy shared CPU only adds to it
    assert -0.02 < r["data_wait_error"] < 1.0
    assert isinstance(r["nvml_samples"], int) and r["nvml_samples"] >= 0
    # (d) the copy probe ran its stages; on the CPU no batch goes to a device, so no copy is timed
    cp = r["copy"]
    assert cp["stages"]["baseline"] == "ok" and cp["stages"]["loader-only"] == "ok" and cp["exit"] == 0
    assert cp["h2d"] is None and cp["pin_memory"] is None


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here")
def test_without_cuda_it_exits_2_with_a_message(tmp_path):
    res = _run("--out", str(tmp_path / "x.json"), timeout=60)
    assert res.returncode == 2
    assert "CUDA is not available" in res.stderr and "--dry-run" in res.stderr
    assert not (tmp_path / "x.json").exists()
