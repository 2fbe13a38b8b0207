"""Ending a run's processes (observe/procs.py) on real processes."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from loaderdoctor.observe import procs

pytestmark = pytest.mark.shares_machine

# A parent that never reaps: its child, once killed, stays a zombie for as long as it lives.
PARENT = ("import subprocess, sys, time\n"
          "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
          "print(c.pid, flush=True)\n"
          "time.sleep(60)\n")


def test_a_killed_process_that_only_its_parent_can_reap_counts_as_ended_at_once():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        child.kill()
        t = time.monotonic()
        left = procs._wait_gone([child], timeout=5.0)
        took = time.monotonic() - t
        assert left == [] and child.status() == psutil.STATUS_ZOMBIE
        assert took < 2.5  # psutil's own wait polls until the parent reaps it: the whole 5 s here
    finally:
        parent.kill()
        parent.wait(timeout=10)


def test_end_run_ends_the_whole_tree():
    root = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        grandchild = psutil.Process(int(root.stdout.readline()))
        assert procs.end_run(root.pid, None, timeout=5.0) == []
        root.wait(timeout=5)
        assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
    finally:
        if root.poll() is None:
            root.kill()
            root.wait(timeout=10)
