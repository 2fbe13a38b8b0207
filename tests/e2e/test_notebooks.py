"""Notebooks in a real Jupyter kernel: the probe of a notebook, and the live probe(loader)."""
import json
import os
import time

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]
NOTEBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notebooks")


def test_class_defined_in_a_cell_under_spawn_is_notebook_only(tmp_path):
    res = run_cli("probe", os.path.join(NOTEBOOKS, "spawn_class_in_cell.ipynb"), "--out", str(tmp_path), "-q",
                  "--stages", "baseline,script-form", "--timeout", "10", timeout=300)
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["target"]["kind"] == "notebook"
    stages = {s["name"]: s["status"] for s in r["stages"]}
    assert stages == {"baseline": "crash", "script-form": "ok"}
    f = next(f for f in r["findings"] if f["id"] == "notebook-only")
    assert "could not import CellDataset" in f["evidence"]
    assert "Can't get attribute 'CellDataset'" in f["evidence"]
    assert "Move CellDataset" in f["fix"] and ".py module" in f["fix"]
    # the worker's own message, which the notebook never shows, is in the report
    assert r["crashes"][0]["missing_main_attr"] == "CellDataset"
    # side by side: the script form ran and was measured, the kernel run is the reference row
    assert r["script_form"]["measured"]["steps"] > 0 and r["script_form"]["measured"]["samples_per_s"] > 0
    md = (tmp_path / "report.md").read_text()
    assert "| notebook in a kernel (baseline) | crash |" in md and "| script | ok |" in md


def test_bad_notebook_is_a_usage_error(tmp_path):
    (tmp_path / "broken.ipynb").write_text("{ not a notebook")
    res = run_cli("probe", str(tmp_path / "broken.ipynb"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "not a readable notebook" in res.stderr and "Traceback" not in res.stderr


def test_live_probe_in_a_running_kernel_survives_a_stuck_loader():
    nb = nbformat.read(os.path.join(NOTEBOOKS, "live_probe.ipynb"), as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    html_out = nb.cells[1].outputs[0]["data"]["text/html"]
    assert "loaderdoctor live probe" in html_out and "<td>ok</td>" in html_out and "<td>20</td>" in html_out
    stuck = nb.cells[2].outputs[0]["data"]["text/html"]
    assert "<td>hang</td>" in stuck and "Culprit: Stuck.__getitem__" in stuck
    assert nb.cells[3].outputs[0]["text"].strip() == "kernel alive hang Stuck.__getitem__ 4"
    # the kernel this test started is gone once the notebook has run
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _kernels_of_this_test():
        time.sleep(0.2)
    assert not _kernels_of_this_test()


def _kernels_of_this_test() -> list:
    left = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline()):
                left.append(p.pid)
        except psutil.Error:
            continue
    return left


def test_watchdog_and_stacks_work_inside_the_kernel(tmp_path):
    res = run_cli("probe", os.path.join(NOTEBOOKS, "hang_in_worker.ipynb"), "--out", str(tmp_path), "-q",
                  "--stages", "baseline", "--timeout", "3", "--first-batch-timeout", "5", timeout=300)
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["verdict"] == "hang"
    (h,) = r["hangs"]
    assert h["culprit"]["role"] == "worker" and h["culprit"]["function"].endswith("__getitem__")
    roles = sorted(p["role"] for p in h["processes"])
    assert roles.count("worker") == 2 and "main" in roles  # main = the kernel, not the runner
    main = next(p for p in h["processes"] if p["role"] == "main")
    assert main["pid"] != h["culprit"]["pid"]
