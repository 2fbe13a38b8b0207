"""The data findings on real workers (docs/findings-data.md): each fires on a script built for
it and stays silent on its healthy twin. Only the stages a finding needs run; numbers are
checked as ratios and generous bounds (a busy 2-core machine)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, script

pytestmark = pytest.mark.slow

DATA = ("worker-memory-growth", "iterable-duplicates", "idle-workers", "slow-worker", "epoch-restart", "slow-read",
        "cacheable-prefix")


def _probe(tmp_path, name, stages, steps, *script_args):
    args = ["probe", script(f"data/{name}"), "--out", str(tmp_path), "--stages", stages, "--steps", str(steps),
            "--timeout", "30", "-q"]
    r = run_cli(*args, *(["--", *script_args] if script_args else []), timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "report.json") as f:
        rep = json.load(f)
    return rep, {f["id"]: f for f in rep["findings"]}


def test_copy_on_read_grows_the_workers_memory(tmp_path):
    r, f = _probe(tmp_path, "copy_on_read.py", "baseline", 1600)  # long enough for the memory-read budget (a reading of these ~500 MB processes costs ~10 ms) to read the workers ~10 times
    g = f["worker-memory-growth"]
    assert "copy-on-read" in g["evidence"] and "items (list of 600,000 items" in g["evidence"]
    assert "MB per batch" in g["evidence"] and "numpy" in g["fix"]
    fit = r["data"]["memory"]["fit"]
    assert fit["slope_mb_s"] > 5 and r["data"]["memory"]["readings"] >= 3  # workers that live ~1 s, read


def test_numpy_backed_dataset_does_not_grow(tmp_path):
    r, f = _probe(tmp_path, "copy_on_read.py", "baseline", 400, "--numpy")
    assert "worker-memory-growth" not in f
    fit = r["data"]["memory"]["fit"]
    assert fit is None or fit["slope_mb_s"] < 4


@pytest.mark.shares_machine
def test_unsharded_iterable_yields_duplicates(tmp_path):
    r, f = _probe(tmp_path, "iterable_unsharded.py", "baseline", 30)
    d = f["iterable-duplicates"]
    assert "workers 0, 1 (2 of the 2 workers" in d["evidence"] and "get_worker_info()" in d["fix"]


def test_sharded_iterable_has_no_duplicates(tmp_path):
    _, f = _probe(tmp_path, "iterable_unsharded.py", "baseline", 30, "--sharded")
    assert "iterable-duplicates" not in f and "idle-workers" not in f


@pytest.mark.shares_machine
def test_one_shard_for_four_workers_leaves_three_idle(tmp_path):
    _, f = _probe(tmp_path, "iterable_one_shard.py", "baseline", 30)
    i = f["idle-workers"]
    assert "3 of 4 workers (ids 1, 2, 3) delivered no batch" in i["evidence"]
    assert "ended their stream at their first fetch" in i["evidence"] and "4 shards" in i["fix"]


def test_four_shards_keep_every_worker_busy(tmp_path):
    _, f = _probe(tmp_path, "iterable_one_shard.py", "baseline", 30, "--shards", "4")
    assert "idle-workers" not in f and "iterable-duplicates" not in f


def test_a_slow_worker_is_named_with_its_share_of_the_wait(tmp_path):
    r, f = _probe(tmp_path, "slow_worker.py", "baseline", 30)
    s = f["slow-worker"]
    slow = r["data"]["workers"]["slow"]
    assert slow["worker"] == 0 and slow["ratio"] > 3, slow  # 10x the sleep; > 3x on a busy machine
    assert slow["wait_share"] > 0.3 and "in_order=False" in s["fix"]


def test_workers_restarted_every_epoch(tmp_path):
    r, f = _probe(tmp_path, "epoch_restart.py", "baseline", 30)
    e = f["epoch-restart"]
    assert "persistent_workers=True" in e["fix"] and e["impact"]["share"] > 0.3
    assert "worker-startup" not in f and r["data"]["epochs"]["later"] >= 2


def test_decoding_outside_the_pipeline_is_a_slow_read(tmp_path):
    r, f = _probe(tmp_path, "slow_decode.py", "baseline,transforms", 20)
    s = f["slow-read"]
    assert r["data"]["read"]["share"] > 0.7
    assert "slow_decode.py:" in s["evidence"] and "__getitem__" in s["evidence"]  # the decompress line
    assert "cacheable-prefix" not in f  # its prefix (crop, to-float) is cheap: caching gains nothing


def test_a_deterministic_resize_prefix_is_cacheable(tmp_path):
    r, f = _probe(tmp_path, "resize_prefix.py", "baseline,transforms", 20)
    c = f["cacheable-prefix"]
    w = r["data"]["cache"]
    assert w["prefix"] == ["Resize", "Normalize"] and w["stopped_at"].startswith("RandomFlip")
    assert w["cached"]["samples_per_s"] > 1.2 * w["uncached"]["samples_per_s"], w
    assert "Resize, Normalize" in c["title"] and "slow-read" not in f


def test_a_healthy_loader_has_none_of_them(tmp_path):
    r, f = _probe(tmp_path, "healthy.py", "baseline,transforms", 30)
    assert not set(f) & set(DATA), {k: f[k]["evidence"] for k in set(f) & set(DATA)}
    assert r["data"]["workers"]["fetches"], "the workers' fetch events arrived"
