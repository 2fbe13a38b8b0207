"""A torchrun job probed rank by rank (--nproc-per-node 2, gloo on CPU, DDP on a tiny model):
the straggler named with its cause, a hang blamed on the rank everyone waits for, uneven
shards, and the merge of two runs' parts. Rendezvous is torch's --standalone (localhost)."""

import json
import os
import time

import pytest

from conftest import run_cli, run_processes_left, script

pytestmark = pytest.mark.slow

RUN_ID = f"dist-test-{os.getpid()}"  # both probes below are parts of one "run" for the merge
PROBE = ("--nproc-per-node", "2", "--stages", "baseline", "--steps", "20", "--warmup", "2", "--timeout", "30",
         "--quiet")


def dist(name):
    return script(os.path.join("dist", name))


def probe(name, out):
    t = time.monotonic()
    res = run_cli("probe", dist(name), *PROBE, "--out", str(out), env={"LOADERDOCTOR_RUN_ID": RUN_ID}, timeout=150)
    assert res.returncode == 0, res.stderr + res.stdout
    with open(out / "report.json") as f:
        return json.load(f), time.monotonic() - t


@pytest.fixture(scope="module")
def straggler_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straggler")
    return out, *probe("straggler.py", out)


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("healthy")
    return out, *probe("healthy.py", out)


def findings(r):
    return {f["id"]: f for f in r["findings"]}


def test_straggler_rank_named_with_input_cause(straggler_run):
    out, r, took = straggler_run
    assert took < 90
    ranks = {x["rank"]: x for x in r["ranks"]}
    assert set(ranks) == {0, 1} and all(x["steps"] >= 15 for x in ranks.values())
    assert ranks[1]["wait_s"] > 5 * ranks[0]["wait_s"]  # rank 1 reads ~20x slower
    assert ranks[0]["collective_s"] > ranks[1]["collective_s"]  # rank 0 waits for it in the all-reduce
    f = findings(r)["straggler-rank"]
    assert f["title"].startswith("Rank 1 is the straggler") and "(input)" in f["title"]
    assert "rank 0 waits" in f["evidence"] and "gradient all-reduce" in f["evidence"]
    assert "Fix rank 1's input" in f["fix"] and f["impact"]["share"] > 0.3
    assert r["baseline"]["data_wait_fraction"] > 0.5  # the baseline is the straggler's view
    assert r["verdict"] == "data-bound" and "rank 1" in findings(r)["data-bound"]["fix"].lower()
    assert r["run_id"] == RUN_ID and r["node"]["nproc_per_node"] == 2
    md = (out / "report.md").read_text()
    assert "## Ranks" in md and "| 1 | " in md
    html = (out / "report.html").read_text()
    assert "<h2>Ranks</h2>" in html


def test_healthy_job_has_no_straggler(healthy_run):
    _, r, _ = healthy_run
    assert len(r["ranks"]) == 2 and all(x["steps"] >= 15 for x in r["ranks"])
    ids = findings(r)
    assert "straggler-rank" not in ids and "uneven-shards" not in ids
    assert r["verdict"] not in ("hang", "crash")
    assert r["stages"][0]["status"] == "ok", r["stages"]


def test_merge_joins_two_runs(straggler_run, healthy_run, tmp_path):
    (a, ra, _), (b, rb, _) = straggler_run, healthy_run
    res = run_cli("report", "merge", str(a), str(b), "--out", str(tmp_path / "merged"), timeout=60)
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert m["run_id"] == RUN_ID and [p["part"] for p in m["merged"]["parts"]] == [0, 1]
    assert [(x["part"], x["rank"]) for x in m["ranks"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    f = findings(m)["straggler-rank"]  # recomputed over all four ranks
    assert f["title"].startswith("Rank 1 (part 0")
    assert len(m["stages"]) == len(ra["stages"]) + len(rb["stages"])
    assert (tmp_path / "merged" / "report.md").exists() and (tmp_path / "merged" / "report.html").exists()
    other = tmp_path / "other"  # a part of another run is refused
    other.mkdir()
    (other / "report.json").write_text(json.dumps({**rb, "run_id": "another"}))
    res = run_cli("report", "merge", str(a), str(other), "--out", str(tmp_path / "m2"), timeout=60)
    assert res.returncode == 2 and "LOADERDOCTOR_RUN_ID" in res.stderr


@pytest.mark.shares_machine
def test_worker_blocked_in_one_rank_is_the_culprit(tmp_path):
    t = time.monotonic()
    res = run_cli("check", dist("hang_worker.py"), "--nproc-per-node", "2", "--timeout", "4",
                  "--first-batch-timeout", "15", "--steps", "10", "--out", str(tmp_path), timeout=150)
    took = time.monotonic() - t
    assert res.returncode == 3, res.stderr + res.stdout
    assert took < 60
    text = res.stderr
    assert "Culprit: read_blob (" in text and "ddp_common.py:" in text and "worker process of rank 1" in text
    assert "rank 0 waits in the gradient all-reduce" in text and "rank 1's main waits for a batch" in text
    stacks = json.loads((tmp_path / "stages" / "check" / "stacks" / "hang.json").read_text())
    roles = {(p.get("rank"), p["role"]) for p in stacks}
    assert {(0, "main"), (1, "main"), (0, "worker"), (1, "worker")} <= roles
    stuck = next(p for p in stacks if p.get("rank") == 1 and p["role"] == "worker")
    assert stuck["frames"][0]["function"] == "read_blob"
    assert not (tmp_path / "stages" / "check" / "events").exists()  # the ranks' FIFOs are removed
    deadline = time.monotonic() + 10
    while run_processes_left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not run_processes_left()  # torchrun's agent, both ranks and their workers are gone


def test_uneven_shards(tmp_path):
    r, took = probe("uneven.py", tmp_path)
    assert took < 90
    f = findings(r)["uneven-shards"]
    assert "rank 0: 6 (counted over a complete epoch)" in f["evidence"]
    assert "rank 1: 5 (counted over a complete epoch)" in f["evidence"]
    assert "DistributedSampler" in f["fix"]
    assert {x["rank"]: x["epoch_batches"][0] for x in r["ranks"]} == {0: 6, 1: 5}
