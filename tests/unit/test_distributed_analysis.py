"""Distributed runs from hand-built sessions and stacks (no process started): the ranks table,
straggler-rank, uneven-shards, the culprit rank of a hang, the watch's end, merge, tagging."""

import json
import os

import pytest

from loaderdoctor.analysis.distculprit import collective, dist_culprit
from loaderdoctor.analysis.merge import merge_reports
from loaderdoctor.analysis.report import build_report
from loaderdoctor.child.emitter import Emitter
from loaderdoctor.orchestrate.distwatch import DistWatch, settle
from loaderdoctor.orchestrate.supervise import StageResult
from loaderdoctor.session import Session

USER = "/home/u/train.py"


def rank_events(rank, n, wait, compute, backward=None, per_epoch=None, dataset_len=4000, batch=4):
    cfg = {"num_workers": 0, "batch_size": batch, "dataset_len": dataset_len, "drop_last": False,
           "sampler": "torch.utils.data.sampler.SequentialSampler", "prefetch_factor": None}
    ev = [{"rank": rank, "e": "hello", "pid": 100 + rank, "local_rank": rank, "node_rank": 0, "host": "h"},
          {"rank": rank, "e": "loader", "l": 0, "site": "train.py:9", "config": cfg, "overridden": None}]
    per_epoch = per_epoch or n
    done = 0
    while done < n:
        ev.append({"rank": rank, "e": "it", "l": 0, "t": 0.0, "workers": [], "threads": []})
        for i in range(min(per_epoch, n - done)):
            b = {"rank": rank, "e": "b", "l": 0, "i": i, "w": wait, "c": None if i == 0 else compute, "n": batch}
            if i == 0:
                b["s"] = wait
            ev.append(b)
            o = {"rank": rank, "e": "o", "l": 0, "t": 0.0, "f": None}
            if backward is not None:
                o["k"] = backward
            ev.append(o)
        done += per_epoch
        if done <= n:
            ev.append({"rank": rank, "e": "end", "l": 0, "c": compute, "why": "epoch"})
    return ev


def dist_session(*ranks, status="ok", hang=None, **notes):
    stage = {"name": "baseline", "status": status, "seconds": 5.0, "detail": "", "events": ranks[0], "exit": None,
             "returncode": 0, "hang": hang, "fatal_dumps": [], "oom_kills": {}, "rank": 0,
             "rank_events": {str(k): evs for k, evs in enumerate(ranks[1:], start=1)}}
    return Session(target={"path": "train.py", "kind": "script", "argv": []}, options={"warmup": 2},
                   environment={"cpu_count_effective": 2}, stages=[stage], notes=notes, run_id="job-7",
                   node={"hostname": "h", "nproc_per_node": len(ranks)})


def ids(r):
    return {f["id"]: f for f in r["findings"]}


def test_input_straggler_named_with_impact_on_every_rank():
    # rank 1 waits 120 ms for data; rank 0 spends that time in backward, waiting in the all-reduce
    r = build_report(dist_session(rank_events(0, 30, 0.007, 0.121, backward=0.118),
                                  rank_events(1, 30, 0.120, 0.006, backward=0.003)))
    rows = {x["rank"]: x for x in r["ranks"]}
    assert rows[0]["collective_s"] == pytest.approx(0.115) and rows[1]["collective_s"] == 0.0
    assert rows[1]["primary"] and r["baseline"]["data_wait_fraction"] > 0.9  # the straggler's view
    f = ids(r)["straggler-rank"]
    assert f["title"] == "Rank 1 is the straggler: every rank waits for it (input)"
    assert "rank 0 waits 115.0 ms per step in the gradient all-reduce" in f["evidence"]
    assert ">= 2x the others' median and >= 50 ms" in f["evidence"]
    assert f["fix"].startswith("Fix rank 1's input, not every rank's") and "More workers on every rank" in f["fix"]
    assert f["impact"]["share"] == pytest.approx(0.115 / 0.1265, abs=0.02)
    d = ids(r)["data-bound"]
    assert d["title"].startswith("Rank 1 waits on data") and "not the loader settings of every rank" in d["fix"]
    assert r["run_id"] == "job-7"


def test_compute_straggler_outside_backward():
    # rank 1's forward takes 130 ms more; rank 0 waits for it inside backward
    r = build_report(dist_session(rank_events(0, 30, 0.005, 0.150, backward=0.140),
                                  rank_events(1, 30, 0.005, 0.150, backward=0.010)))
    f = ids(r)["straggler-rank"]
    assert "Rank 1" in f["title"] and "(compute)" in f["title"]
    assert "work only it does" in f["fix"]


def test_balanced_ranks_have_no_straggler():
    r = build_report(dist_session(rank_events(0, 30, 0.010, 0.020, backward=0.012),
                                  rank_events(1, 30, 0.012, 0.019, backward=0.010)))
    assert "straggler-rank" not in ids(r) and len(r["ranks"]) == 2


def test_without_backward_timing_the_data_wait_names_the_straggler():
    r = build_report(dist_session(rank_events(0, 30, 0.007, 0.121), rank_events(1, 30, 0.120, 0.006)))
    assert all(x["collective_s"] is None for x in r["ranks"])
    assert "(input)" in ids(r)["straggler-rank"]["title"]


def test_small_waits_are_no_straggler():
    # 4x the other's wait, but under the 50 ms floor
    r = build_report(dist_session(rank_events(0, 30, 0.004, 0.030), rank_events(1, 30, 0.016, 0.018)))
    assert "straggler-rank" not in ids(r)


def test_uneven_shards_from_complete_epochs():
    r = build_report(dist_session(rank_events(0, 24, 0.005, 0.01, per_epoch=6),
                                  rank_events(1, 25, 0.005, 0.01, per_epoch=5)))
    f = ids(r)["uneven-shards"]
    assert "rank 0: 6 (counted over a complete epoch), rank 1: 5" in f["evidence"]
    assert "rank 0 blocks in an all-reduce nobody joins" in f["evidence"] and "DistributedSampler" in f["fix"]


def test_uneven_shards_from_len_loader():
    # no epoch completed: len(loader) from the configuration (a plain sampler)
    r = build_report(dist_session(rank_events(0, 10, 0.005, 0.01, dataset_len=21, per_epoch=1000),
                                  rank_events(1, 10, 0.005, 0.01, dataset_len=20, per_epoch=1000)))
    assert "rank 0: 6 (len(loader)), rank 1: 5 (len(loader))" in ids(r)["uneven-shards"]["evidence"]
    even = build_report(dist_session(rank_events(0, 10, 0.005, 0.01, dataset_len=20, per_epoch=1000),
                                     rank_events(1, 10, 0.005, 0.01, dataset_len=20, per_epoch=1000)))
    assert "uneven-shards" not in ids(even)


def test_single_process_report_has_no_ranks():
    s = dist_session(rank_events(0, 10, 0.005, 0.01))
    s.stages[0]["rank"] = None
    assert build_report(s)["ranks"] == []


def frames(*names):
    return [{"function": fn, "file": file, "line": line} for fn, file, line in names]


BACKWARD = frames(("_engine_run_backward", "/venv/lib/python3.11/site-packages/torch/autograd/graph.py", 841),
                  ("backward", "/venv/lib/python3.11/site-packages/torch/autograd/__init__.py", 364),
                  ("train", USER, 40))
BATCH_WAIT = frames(("_try_get_data", "/venv/lib/python3.11/site-packages/torch/utils/data/dataloader.py", 1291),
                    ("_next_data", "/venv/lib/python3.11/site-packages/torch/utils/data/dataloader.py", 1505),
                    ("train", USER, 37))
IDLE_WORKER = frames(("get", "/usr/lib/python3.11/multiprocessing/queues.py", 113),
                     ("_worker_loop", "/venv/lib/python3.11/site-packages/torch/utils/data/_utils/worker.py", 334))
BLOCKED_WORKER = frames(("read_blob", USER, 22), ("__getitem__", USER, 18),
                        ("_worker_loop", "/venv/lib/python3.11/site-packages/torch/utils/data/_utils/worker.py", 374))


def proc(pid, role, rank, fr, worker=None):
    p = {"pid": pid, "role": role, "rank": rank, "thread": "MainThread", "frames": fr,
         "threads": [{"name": "MainThread", "frames": fr}]}
    if worker is not None:
        p["worker"] = worker
    return p


def test_hang_culprit_is_the_rank_the_others_wait_for():
    found = dist_culprit([proc(1, "other", None, []), proc(10, "main", 0, BACKWARD),
                          proc(11, "worker", 0, IDLE_WORKER, 0), proc(20, "main", 1, BATCH_WAIT),
                          proc(21, "worker", 1, BLOCKED_WORKER, 0)])
    assert found["rank"] == 1
    assert found["culprit"] == {"role": "worker", "pid": 21, "function": "read_blob", "file": USER, "line": 22,
                                "rank": 1, "worker": 0}
    assert found["story"] == (f"rank 0 waits in the gradient all-reduce (train at {USER}:40) for rank 1; rank 1's "
                              f"main waits for a batch; its worker 0 (pid 21) is blocked in read_blob at {USER}:22")
    assert [s["state"] for s in found["ranks"]] == ["collective", "batch"]


def test_every_rank_in_a_collective_says_so():
    barrier = frames(("barrier", "/venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py", 81),
                     ("evaluate", USER, 60))
    found = dist_culprit([proc(10, "main", 0, BACKWARD), proc(20, "main", 1, barrier)])
    assert found["rank"] == 0 and found["story"].startswith("every rank waits in a collective")
    assert collective(barrier) == "barrier" and collective(BATCH_WAIT) is None


def test_rule_hang_tells_who_waits_for_whom():
    hang = {"stage": "baseline", "method": "py-spy", "idle_s": 8.0, "rank": 1, "story": "rank 0 waits ... for rank 1",
            "processes": [], "culprit": {"role": "worker", "pid": 21, "rank": 1, "function": "read_blob",
                                         "file": USER, "line": 22}}
    r = build_report(dist_session(rank_events(0, 2, 0.005, 0.01), rank_events(1, 0, 0.005, 0.01), status="hang",
                                  hang=hang))
    f = ids(r)
    assert r["verdict"] == "hang" and f["hang"]["evidence"].startswith("Ranks: rank 0 waits ... for rank 1.")
    assert "straggler-rank" not in f and r["hangs"][0]["rank"] == 1


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_watch_ends_when_one_rank_stopped_and_ignores_what_follows():
    clock = Clock()
    w = DistWatch(clock, None, 2)
    w.handle({"rank": 0, "e": "hello", "pid": 10})
    w.handle({"rank": 1, "e": "hello", "pid": 20})
    w.handle({"rank": 0, "e": "it", "l": 0, "workers": [11]})
    w.handle({"rank": 1, "e": "it", "l": 0, "workers": [21]})
    w.handle({"rank": 0, "e": "b", "l": 0})
    assert w.waiting_first  # rank 1 still waits for its first batch
    w.handle({"rank": 1, "e": "b", "l": 0})
    assert not w.waiting_first and w.main_pid == 10 and w.rank_of(21) == (1, 0)
    w.handle({"rank": 0, "e": "exit", "how": "stopped", "code": 0})
    assert w.exit is None  # the other rank gets a moment to stop too
    w.handle({"rank": 1, "e": "exit", "how": "exception", "code": 1})  # its peer left mid all-reduce
    assert w.exit["how"] == "stopped" and w.exit["rank"] == 0
    res = StageResult(name="baseline", status="ok", seconds=1.0)
    settle(res, w)
    assert res.rank == 0 and res.exit["how"] == "stopped"
    assert all(e.get("rank") == 0 for e in res.events) and set(res.rank_events) == {"1"}


def test_watch_waits_a_grace_for_a_failing_rank():
    clock = Clock()
    w = DistWatch(clock, None, 2)
    w.handle({"rank": 1, "e": "exit", "how": "exception", "code": 1, "exc": {"type": "ValueError"}})
    assert w.exit is None
    clock.t = 6.0
    assert w.exit["rank"] == 1
    res = StageResult(name="baseline", status="ok", seconds=1.0)
    settle(res, w)
    assert res.rank == 1  # the failing rank's events are the ones a crash is read from


def test_merge_concatenates_ranks_and_recomputes_findings():
    a = build_report(dist_session(rank_events(0, 30, 0.007, 0.121, backward=0.118),
                                  rank_events(1, 30, 0.120, 0.006, backward=0.003)))
    b = build_report(dist_session(rank_events(0, 30, 0.010, 0.020, backward=0.012),
                                  rank_events(1, 30, 0.012, 0.019, backward=0.010)))
    hung = {**b, "hangs": [{"stage": "check", "rank": 1, "culprit": None, "processes": []}]}
    m = merge_reports([hung, a], names=["node0", "node1"])
    assert [(x["part"], x["rank"]) for x in m["ranks"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [p["source"] for p in m["merged"]["parts"]] == ["node0", "node1"]
    assert m["hangs"][0]["part"] == 0 and m["verdict"] == "hang"  # recomputed from the joined report
    m = merge_reports([a, b])
    assert ids(m)["straggler-rank"]["title"].startswith("Rank 1 (part 0, h) is the straggler")


def test_emitter_tags_every_event_with_its_rank():
    r, w = os.pipe()
    em = Emitter(w, rank=3)
    em.json({"e": "hello", "pid": 1})
    em.batch('{"e":"b","l":0}', 0.0)
    em.flush()
    os.close(w)
    with os.fdopen(r, "rb") as f:
        lines = [json.loads(x) for x in f.read().splitlines()]
    assert lines == [{"rank": 3, "e": "hello", "pid": 1}, {"rank": 3, "e": "b", "l": 0}]
