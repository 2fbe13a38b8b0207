import json

import pytest

from conftest import run_cli, script

pytest.importorskip("lightning")
pytestmark = pytest.mark.slow


def test_lightning_trainer_fit_is_measured(tmp_path):
    res = run_cli("probe", "--stages", "baseline", script("lightning_fit.py"), "--out", str(tmp_path), "--steps", "20", "-q")
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    train = next(l for l in r["loaders"] if l["role"] == "train")
    assert train["dataset"].endswith("Points") and train["batch_size"] == 8
    assert r["baseline"]["steps"] == 20
    assert r["baseline"]["samples_per_s"] > 0
    assert r["baseline"]["data_wait_fraction"] is not None
