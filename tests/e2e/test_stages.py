"""The staged probes on real scripts: sweep, transforms, confirm, worker start-up."""

import importlib.util
import json
import os
import time

import pytest

from conftest import SCRIPTS, run_cli, script

pytestmark = pytest.mark.slow


def probe(tmp_path, name, *args, timeout=400):
    res = run_cli("probe", script(name), "--out", str(tmp_path), "-q", *args, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads((tmp_path / "report.json").read_text())


def test_io_bound_sweep_climbs_past_the_cores_and_confirms(tmp_path):
    r = probe(tmp_path, "io_bound.py", "--steps", "20", "--repeats", "3", "--stages",
              "baseline,loader-only,workers,confirm")
    eff = r["environment"]["cpu_count_effective"]
    tried = [row["num_workers"] for row in r["workers_sweep"]]
    assert max(tried) > eff, tried  # I/O-bound: it kept climbing past the cores
    assert r["recommendation"]["num_workers"] >= 4
    # workers sleeping on I/O leave the CPUs idle: what let the sweep past the cores
    assert all(row["cpu_busy_pct"] < 60 for row in r["workers_sweep"]), r["workers_sweep"]
    assert r["confirm"]["status"] == "ok"
    assert r["recommendation"]["measured_speedup"] >= 2.5, r["confirm"]
    f = next(f for f in r["findings"] if f["id"] == "too-few-workers")
    assert "Confirmed on the real training script" in f["evidence"]
    assert f"num_workers={r['recommendation']['num_workers']}" in f["fix"]


def test_cpu_bound_recommendation_stays_within_the_cores(tmp_path):
    r = probe(tmp_path, "cpu_bound_dataset.py", "--steps", "20", "--stages", "baseline,loader-only,workers")
    eff = r["environment"]["cpu_count_effective"]
    assert r["sweep"]["choice"] <= eff, r["workers_sweep"]
    assert r["recommendation"]["num_workers"] <= eff
    at_cores = next(row for row in r["workers_sweep"] if row["num_workers"] == eff)
    assert at_cores["cpu_busy_pct"] >= 60, r["workers_sweep"]  # pure-Python samples keep the CPUs busy


def _true_shares():
    """Time the pipeline's steps here, the way the test script defines them."""
    spec = importlib.util.spec_from_file_location("tp", os.path.join(SCRIPTS, "transform_pipeline.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import torch

    x = torch.zeros(4)
    cost = []
    for t in mod.PIPELINE.transforms:
        t0 = time.perf_counter()
        for _ in range(50):
            t(x)
        cost.append((time.perf_counter() - t0) / 50)
    total = sum(cost)
    return [c / total for c in cost]


def test_dominant_transform_is_ranked_first_with_its_true_share(tmp_path):
    truth = _true_shares()
    r = probe(tmp_path, "transform_pipeline.py", "--steps", "20", "--stages", "baseline,transforms")
    rows = r["transforms"]
    assert [t["name"] for t in rows] == ["Decode", "ElasticDeform", "Scale"]
    top = max(rows, key=lambda t: t["share"])
    assert top["name"] == "ElasticDeform"
    assert abs(top["share"] - truth[1]) <= 0.15, (top, truth)
    assert r["pipeline"]["processes_timed"] >= 1  # timed inside the worker
    f = next(f for f in r["findings"] if f["id"] == "slow-transform")
    assert "ElasticDeform" in f["title"]
    assert r["collate"] is not None and r["collate"]["ms_per_batch"] >= 0
    # the baseline is the reference row of the table, in both reports
    ref = "baseline training loop (1000 / its samples/s)"
    assert r["baseline"]["ms_per_sample"] == pytest.approx(1000 / r["baseline"]["samples_per_s"], rel=1e-3)
    md = (tmp_path / "report.md").read_text()
    transforms_md = md[md.index("## Transforms"):]
    assert transforms_md.index(ref) < transforms_md.index("Decode")
    html = (tmp_path / "report.html").read_text()
    assert f'<tr class="ref"><td>ref</td><td>{ref}</td><td>{r["baseline"]["ms_per_sample"]}</td>' in html


def test_prefix_ablation_names_a_transform_that_blocks_only_in_workers(tmp_path):
    r = probe(tmp_path, "worker_only_block.py", "--timeout", "3", "--first-batch-timeout", "4",
              "--stages", "baseline,transforms")
    assert r["verdict"] == "hang"
    assert r["pipeline"]["culprit"]["name"] == "PoolDecode"
    status = {t["name"]: t["status"] for t in r["transforms"]}
    assert status == {"Resize": "ok", "PoolDecode": "hang", "ToFloat": "not reached"}
    hang = next(f for f in r["findings"] if f["id"] == "hang")
    assert "when step 1 (PoolDecode) was added" in hang["evidence"]


def test_worker_startup_each_epoch_recommends_persistent_workers(tmp_path):
    r = probe(tmp_path, "worker_startup.py", "--steps", "30", "--timeout", "20", "--repeats", "3",
              "--stages", "baseline,loader-only,workers,confirm")
    f = next(f for f in r["findings"] if f["id"] == "epoch-restart")  # paid every epoch: rules/startup.py
    assert "persistent_workers=True" in f["fix"]
    assert r["recommendation"]["persistent_workers"] is True
    assert r["recommendation"]["measured_speedup"] >= 1.5, r["confirm"]


@pytest.mark.shares_machine
def test_pipeline_not_found_is_reported_with_the_reason(tmp_path):
    r = probe(tmp_path, "slow_getitem.py", "--steps", "10", "--stages", "baseline,transforms")
    assert r["transforms"] == []
    assert r["pipeline"]["found"] is False and "no transform pipeline" in r["pipeline"]["reason"]


@pytest.mark.shares_machine
def test_budget_bounds_the_probe_and_says_what_was_skipped(tmp_path):
    t = time.monotonic()
    r = probe(tmp_path, "io_bound.py", "--steps", "10", "--budget", "25", "--stages",
              "baseline,loader-only,workers,confirm")
    assert time.monotonic() - t < 25 + 40  # budget + one stage's bounded overrun + start-up
    skipped = [s for s in r["stages"] if s["status"] == "skipped"]
    assert any("--budget of 25 s was used up" in s["detail"] for s in skipped), skipped
