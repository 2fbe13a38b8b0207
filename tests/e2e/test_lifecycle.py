"""loaderdoctor owns its process tree: killed with SIGKILL in the middle of a stage with
workers running (one of them blocked in __getitem__, deaf to torch's own watchdog), nothing of
the probe lives on 5 s later; SIGTERM and a closed terminal (SIGHUP) end the run and keep a
partial report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_processes_left, script

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]


def _start(tmp_path, name, *args):
    proc = subprocess.Popen([sys.executable, "-m", "loaderdoctor", "probe", script(name), "--out", str(tmp_path),
                             "--steps", "100000", "--timeout", "60", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc


def _wait_for_workers(tmp_path, proc, deadline_s=60, stage="baseline"):
    """Sync on the run's own events: the iterator started its workers (session not written yet,
    so watch the stage's stack folder for the workers' faulthandler files)."""
    stacks = tmp_path / "stages" / stage / "stacks"
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if stacks.exists() and len([f for f in os.listdir(stacks) if f.startswith("worker-")]) >= 2:
            return
        if proc.poll() is not None:
            pytest.fail(f"loaderdoctor ended early: {proc.communicate(timeout=10)}")
        time.sleep(0.1)
    proc.kill()
    proc.communicate(timeout=30)
    pytest.fail("the workers never started")


def _left_within(seconds):
    deadline = time.monotonic() + seconds
    left = run_processes_left()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = run_processes_left()
    return left


@pytest.mark.parametrize("name", ["forever.py", "hang_in_getitem.py"])
def test_sigkill_of_loaderdoctor_leaves_nothing_alive(tmp_path, name):
    proc = _start(tmp_path, name)
    _wait_for_workers(tmp_path, proc)
    time.sleep(1.0)  # the blocked worker is inside __getitem__ by now
    assert run_processes_left(), "the run's processes should be alive before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    left = _left_within(5.0)
    assert not left, [(p.pid, p.name()) for p in left]


def test_sigkill_during_a_warm_stage_leaves_nothing_alive(tmp_path):
    """The stage after the baseline is forked from the warm process: that process, the runner
    it forked and the runner's workers all end with loaderdoctor."""
    proc = _start(tmp_path, "forever.py", "--steps", "3", "--stages", "baseline,loader-only",
                  "--timeout", "30")
    _wait_for_workers(tmp_path, proc, stage="loader-only")
    time.sleep(0.5)
    left = run_processes_left()
    assert any("loaderdoctor.child.warm" in " ".join(p.cmdline()) for p in left), "no warm process ran the stage"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    left = _left_within(5.0)
    assert not left, [(p.pid, p.name()) for p in left]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_hangup_keeps_a_partial_report(tmp_path, sig):
    proc = _start(tmp_path, "forever.py")
    _wait_for_workers(tmp_path, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Interrupted" in err
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["interrupted"] is True and r["stages"][0]["name"] == "baseline"
    assert not _left_within(5.0)
