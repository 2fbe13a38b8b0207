"""Per-transform tables for real libraries' Compose: MONAI and torchvision (v1 and v2).

torchvision needs torch 2.14.1 here (a CUDA build, slow to import), so .ci/run installs it
in a second environment and names its interpreter in LOADERDOCTOR_TV_PYTHON; the probe runs
under that interpreter."""

import json
import os
import subprocess

import pytest

from conftest import CLI_TIMEOUT, run_cli, script

pytestmark = pytest.mark.slow


def _table(r):
    return [(t["name"], t["status"]) for t in r["transforms"]]


def test_monai_compose_gets_a_per_transform_table(tmp_path):
    pytest.importorskip("monai")
    res = run_cli("probe", script("monai_pipeline.py"), "--out", str(tmp_path), "-q", "--steps", "10",
                  "--stages", "baseline,transforms")
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["pipeline"]["kind"] == "Compose" and r["pipeline"]["found"]
    assert _table(r) == [("EnsureChannelFirstd", "ok"), ("ScaleIntensityd", "ok"), ("RandFlipd", "ok"),
                         ("RandGaussianNoised", "ok")]
    assert all(t["ms_per_sample"] > 0 and 0 < t["share"] < 1 for t in r["transforms"])
    assert r["pipeline"]["processes_timed"] == 2  # timed inside both workers


def _tv_python():
    py = os.environ.get("LOADERDOCTOR_TV_PYTHON")
    if py and os.path.exists(py):
        return py
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pytest.skip("torchvision is not installed here; .ci/run sets LOADERDOCTOR_TV_PYTHON to an environment "
                    "with torch 2.14.1 + torchvision 0.29.1")
    import sys

    return sys.executable


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_torchvision_compose_gets_a_per_transform_table(tmp_path, version):
    py = _tv_python()
    res = subprocess.run([py, "-m", "loaderdoctor", "probe", script("torchvision_pipeline.py"), "--out",
                          str(tmp_path), "-q", "--steps", "10", "--stages", "baseline,transforms", "--", version],
                         capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    names = [n for n, _ in _table(r)]
    assert names[:3] == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter"]
    assert names[-1] == "Normalize"
    assert all(status == "ok" for _, status in _table(r))
    assert all(t["ms_per_sample"] > 0 for t in r["transforms"])
    assert abs(sum(t["share"] for t in r["transforms"]) - 1.0) < 0.35  # the steps are most of a sample's time
