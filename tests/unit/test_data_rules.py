"""The data findings (docs/findings-data.md), each from a hand-built session: fires on the
case it is for, silent on a healthy one. No process runs."""

from __future__ import annotations

import pytest

from loaderdoctor.analysis.report import build_report
from loaderdoctor.session import Session

MB = 2**20
SITE = "train.py:30"


def loader(nw=2, persistent=False, instances=1, n=4000, bs=4, method="fork", init=None):
    cfg = {"num_workers": nw, "batch_size": bs, "persistent_workers": persistent, "prefetch_factor": 2 if nw else None,
           "start_method": method if nw else None, "pin_memory": False, "dataset": "__main__.Rows", "dataset_len": n,
           "worker_init_fn": init}
    return [{"e": "loader", "l": 0, "site": SITE, "config": cfg, "overridden": None}] * instances


def ds(containers=(), iterable=False, in_order=True):
    return [{"e": "ds", "l": 0, "iterable": iterable, "containers": list(containers),
             "in_order": {"supported": in_order, "value": True if in_order else None}}]


def run(n, wait, compute, pids=(11, 12), fetch_ms=None, t0=1.0, startup=0.3, it_t=None, samples=4):
    """One iterator: "it", n batches ("b" events on the recorder's clock), and each batch's
    fetch ("wf") in worker k = i % len(pids) taking fetch_ms[k] ms, ending before it arrives."""
    it_t = t0 - startup if it_t is None else it_t
    ev = [{"e": "it", "l": 0, "t": it_t, "workers": list(pids), "threads": [], "cuda_init": False}]
    t = t0
    for i in range(n):
        t += startup if i == 0 else wait + compute
        b = {"e": "b", "l": 0, "i": i, "w": startup if i == 0 else wait, "c": None if i == 0 else compute,
             "n": samples, "t": round(t, 6)}
        if i == 0:
            b["s"] = startup
        ev.append(b)
        if fetch_ms:
            k = i % len(pids)
            d = fetch_ms[k] / 1000
            ev.append({"e": "wf", "l": 0, "w": k, "pid": pids[k], "t0": round(t - d - 1e-3, 6),
                       "t1": round(t - 1e-3, 6), "i": i, "n": samples, "tr": None})
    ev.append({"e": "end", "l": 0, "c": compute, "why": "epoch"})
    return ev


def stage(name, events, **extra):
    return {"name": name, "status": "ok", "seconds": 5.0, "detail": "", "events": events, "exit": None,
            "returncode": 0, "hang": None, "fatal_dumps": [], "oom_kills": {}, **extra}


def session(stages, **env):
    environment = {"cpu_count_effective": 2, "memory_total_bytes": 16 * 2**30, "cgroup_memory_limit_bytes": None,
                   **env}
    return Session(target={"path": "train.py", "kind": "script", "argv": []}, options={"warmup": 3},
                   environment=environment, stages=stages, notes={})


def findings(s):
    r = build_report(s)
    return r, {f["id"]: f for f in r["findings"]}


# ---------------------------------------------------------------- worker-memory-growth


def _memory_session(mb_per_s, containers=True, limit=None, nw=2, n=4000):
    """Two epochs of two workers each; the workers' USS read every 0.2 s from their birth."""
    ev = loader(nw=nw, n=n) + ds([{"attr": "items", "type": "list", "len": 600_000, "mb": 180.0,
                                   "objects": 2_400_000}] if containers else [])
    rows, worker_memory = [], []
    pids_by_epoch = [(11, 12), (21, 22)]
    for k, pids in enumerate(pids_by_epoch):
        t0 = 1.0 + 2.0 * k
        ev += run(100, 0.01, 0.005, pids=pids, fetch_ms=[5, 5], t0=t0, startup=0.1)
        for pid in pids:
            for j in range(1, 9):  # sampler clock = recorder clock + 2.0 (window below)
                worker_memory.append({"t": round(t0 - 0.1 + 2.0 + 0.2 * j, 3), "pid": pid,
                                      "uss": int((10 + mb_per_s * 0.2 * j) * MB), "pss": None})
    rows.append({"t": 1.0, "pid": 10, "role": "main", "cpu": 0.0, "status": "running", "uss": 50 * MB,
                 "pss": 300 * MB})
    samples = {"rows": rows, "worker_memory": worker_memory, "system": []}
    return session([stage("baseline", ev, samples=samples, window=[3.1, 6.0])],
                   cgroup_memory_limit_bytes=limit)


def test_worker_memory_growth_names_copy_on_read_and_the_epoch_projection():
    r, f = findings(_memory_session(30.0))
    e = f["worker-memory-growth"]["evidence"]
    assert "slope of 30.0 MB/s per worker" in e
    assert "copy-on-read" in e and "items (list of 600,000 items, ~180 MB" in e
    assert "MB per batch" in e and "16384 MB MemTotal" in e
    assert "numpy arrays" in f["worker-memory-growth"]["fix"]
    assert f["worker-memory-growth"]["severity"] == "warning"


def test_worker_memory_growth_to_the_limit_within_an_epoch_is_critical():
    _, f = findings(_memory_session(30.0, containers=False, limit=400 * MB, n=400_000))
    g = f["worker-memory-growth"]
    assert g["severity"] == "critical" and "expect the OOM killer" in g["evidence"]
    assert "cgroup memory limit" in g["evidence"] and "No large Python container" in g["evidence"]


def test_flat_worker_memory_is_silent():
    _, f = findings(_memory_session(0.5))
    assert "worker-memory-growth" not in f


def test_unexplained_growth_needs_more_than_copy_on_read_does():
    """Without Python containers a few tens of MB in a short stage is the allocator warming up."""
    _, f = findings(_memory_session(12.0, containers=False))
    assert "worker-memory-growth" not in f
    _, f = findings(_memory_session(12.0, containers=True))
    assert "worker-memory-growth" in f


# ---------------------------------------------------------------- iterable-duplicates, idle-workers


def _hashes(pids, digests_by_pid):
    return [{"e": "wh", "l": 0, "w": k, "pid": pid, "k": j, "h": h}
            for k, pid in enumerate(pids) for j, h in enumerate(digests_by_pid[pid])]


def test_iterable_duplicates_from_identical_first_batches():
    ev = loader() + ds(iterable=True) + run(40, 0.01, 0.002, fetch_ms=[5, 5])
    ev += _hashes((11, 12), {11: ["a1", "a2", "a3"], 12: ["a1", "a2", "a3"]})
    _, f = findings(session([stage("baseline", ev)]))
    d = f["iterable-duplicates"]
    assert "The first 3 batches of workers 0, 1 (2 of the 2 workers of iterator 1) were identical" in d["evidence"]
    assert "Each epoch delivered 160 samples with 2 workers" in d["evidence"]
    assert "get_worker_info()" in d["fix"] and d["severity"] == "critical"


def test_sharded_streams_are_not_duplicates_even_when_epochs_repeat():
    """Worker 0 of each epoch yields the same shard: identical across epochs, never within one."""
    ev = loader() + ds(iterable=True)
    ev += run(30, 0.01, 0.002, pids=(11, 12), fetch_ms=[5, 5])
    ev += run(30, 0.01, 0.002, pids=(21, 22), fetch_ms=[5, 5], t0=5.0)
    ev += _hashes((11, 12), {11: ["a", "b", "c"], 12: ["x", "y", "z"]})
    ev += _hashes((21, 22), {21: ["a", "b", "c"], 22: ["x", "y", "z"]})
    _, f = findings(session([stage("baseline", ev)]))
    assert "iterable-duplicates" not in f


def test_constant_streams_are_not_compared():
    """Dummy data (zeros in every batch) is alike in every worker whether sharded or not."""
    ev = loader() + ds(iterable=True) + run(40, 0.01, 0.002, fetch_ms=[5, 5])
    ev += _hashes((11, 12), {11: ["z", "z", "z"], 12: ["z", "z", "z"]})
    _, f = findings(session([stage("baseline", ev)]))
    assert "iterable-duplicates" not in f


def test_idle_workers_whose_streams_end_at_once():
    pids = (11, 12, 13, 14)
    ev = loader(nw=4) + ds(iterable=True)
    ev += run(40, 0.02, 0.002, pids=(11,), fetch_ms=[10], it_t=0.7)
    ev[len(loader(nw=4)) + 1]["workers"] = list(pids)  # the iterator started four workers
    ev += [{"e": "wx", "l": 0, "w": k, "pid": pid, "n": 0, "t": 0.9} for k, pid in enumerate(pids[1:], start=1)]
    _, f = findings(session([stage("baseline", ev)]))
    i = f["idle-workers"]
    assert "3 of 4 workers (ids 1, 2, 3) delivered no batch while worker(s) 0 delivered 40 batches" in i["evidence"]
    assert "3 of them ended their stream at their first fetch" in i["evidence"]
    assert "at least 4 shards" in i["fix"] and "num_workers=1" in i["fix"]


def test_every_worker_delivering_is_not_idle():
    ev = loader(nw=2) + ds(iterable=True) + run(40, 0.01, 0.002, fetch_ms=[5, 5])
    _, f = findings(session([stage("baseline", ev)]))
    assert "idle-workers" not in f


# ---------------------------------------------------------------- slow-worker


def test_slow_worker_with_its_share_of_the_wait_and_in_order():
    ev = loader(nw=3) + ds() + run(60, 0.01, 0.002, pids=(11, 12, 13), fetch_ms=[40, 4, 4])
    # worker 0's batches (every third) are the ones waited for
    for e in ev:
        if e.get("e") == "b" and "s" not in e:
            e["w"] = 0.04 if e["i"] % 3 == 0 else 0.001
    _, f = findings(session([stage("baseline", ev)]))
    s = f["slow-worker"]
    assert "worker 0: 40.0 ms (20 fetches), worker 1: 4.0 ms" in s["evidence"]
    assert "takes 10.0x the others' 4.0 ms" in s["evidence"] and "of the training loop's time" in s["evidence"]
    assert "in_order=False" in s["fix"]
    assert s["impact"]["share"] > 0.5


def test_slow_worker_without_in_order_in_this_torch():
    ev = loader(nw=3) + ds(in_order=False) + run(60, 0.01, 0.002, pids=(11, 12, 13), fetch_ms=[40, 4, 4])
    _, f = findings(session([stage("baseline", ev)]))
    assert "DataLoader(..., in_order=False)" not in f["slow-worker"]["fix"]
    assert "torch >= 2.6" in f["slow-worker"]["fix"]


def test_even_workers_are_silent():
    ev = loader(nw=3) + ds() + run(60, 0.01, 0.002, pids=(11, 12, 13), fetch_ms=[5, 6, 5])
    _, f = findings(session([stage("baseline", ev)]))
    assert "slow-worker" not in f


# ---------------------------------------------------------------- epoch-restart, worker-startup


def _epochs(iterators, startup, persistent=False, n=48, batches=12):
    ev = loader(nw=2, persistent=persistent, n=n)
    for k in range(iterators):
        ev += run(batches, 0.005, 0.002, t0=1.0 + k * 2.0, startup=startup if (k == 0 or not persistent) else 0.01)
    return session([stage("baseline", ev)])


def test_epoch_restart_sums_the_first_batch_waits_of_later_epochs():
    _, f = findings(_epochs(5, 0.5))
    e = f["epoch-restart"]
    assert "5 epochs of the training loader were measured" in e["evidence"]
    assert "(0.50 s, 0.50 s, 0.50 s, 0.50 s; 0.50 s on average)" in e["evidence"]
    assert e["impact"]["share"] > 0.8 and e["severity"] == "critical"  # 42 ms per step, spread
    assert "worker-startup" not in f


def test_persistent_workers_are_not_restarted():
    _, f = findings(_epochs(5, 0.5, persistent=True))
    assert "epoch-restart" not in f


def test_a_single_long_start_up_is_worker_startup():
    _, f = findings(_epochs(1, 3.0, n=160, batches=40))
    w = f["worker-startup"]
    assert "first batch arrived 3.00 s after its iterator started" in w["evidence"]
    assert "paid once per run" in w["evidence"] and "epoch-restart" not in f


def test_a_short_start_up_is_silent():
    _, f = findings(_epochs(1, 0.3, n=160, batches=40))
    assert "worker-startup" not in f and "epoch-restart" not in f


# ---------------------------------------------------------------- slow-read, cacheable-prefix


def _transforms_session(total, fetch_s, read_frames=None, cache=None):
    base = loader(nw=2) + ds() + run(40, 0.02, 0.002)
    tev = [{"e": "pipeline", "found": True, "kind": "Compose", "path": "dataset.transform.transforms",
            "names": ["Crop", "ToFloat"]}]
    tev += [{"e": "prefix", "k": k, "phase": p} for k in range(3) for p in ("start", "ok")]
    if cache:
        tev.append(cache)
    ts = {"total": total, "calls": [100, 100], "fetch_s": fetch_s, "collate_s": 0.01, "samples": 100, "batches": 25,
          "processes": 2, "read_frames": read_frames or []}
    return session([stage("baseline", base), stage("transforms", tev, tstats=ts)])


def test_slow_read_is_the_rest_of_getitem_with_its_frames():
    frames = [{"samples": 90, "frames": [{"function": "__getitem__", "file": "/src/data.py", "line": 41,
                                          "samples": 85, "share": 0.94}]},
              {"samples": 10, "frames": [{"function": "__getitem__", "file": "/src/data.py", "line": 41,
                                          "samples": 9, "share": 0.9}]}]
    _, f = findings(_transforms_session([0.05, 0.05], 2.01, frames))
    s = f["slow-read"]
    assert "took 1.00 ms; the rest of __getitem__" in s["evidence"] and "took 19.00 ms (95%)" in s["evidence"]
    assert "__getitem__ at data.py:41 (94%)" in s["evidence"]
    assert "pre-resized" in s["fix"] and "decoder" in s["fix"]


def test_transform_bound_samples_are_not_slow_reads():
    _, f = findings(_transforms_session([1.5, 0.4], 2.01))
    assert "slow-read" not in f


def _whatif(before, after, status="ok"):
    return {"e": "cache_whatif", "prefix": ["Resize", "Normalize"], "steps": 3,
            "stopped_at": "RandomFlip: RandomFlip is a random transform (by its name)", "heuristic": "h",
            "status": status, "samples": 24, "fill_s": 0.05, "fill_ms_per_sample": 2.0,
            "uncached": {"samples_per_s": before, "batches": 20}, "cached": {"samples_per_s": after, "batches": 40}}


def test_cacheable_prefix_quotes_the_measured_what_if():
    _, f = findings(_transforms_session([1.5, 0.4], 2.01, cache=_whatif(100.0, 250.0)))
    c = f["cacheable-prefix"]
    assert "first 2 of 3 steps (Resize, Normalize) look deterministic" in c["evidence"]
    assert "100.0 samples/s with the full pipeline and 250.0 samples/s with the prefix's output cached" in c["evidence"]
    assert "Keep every random step after the cache" in c["fix"]


@pytest.mark.parametrize("before,after,status", [(100.0, 105.0, "ok"), (100.0, 300.0, "not-measured")])
def test_no_cacheable_prefix_without_a_measured_gain(before, after, status):
    _, f = findings(_transforms_session([1.5, 0.4], 2.01, cache=_whatif(before, after, status)))
    assert "cacheable-prefix" not in f


def test_a_healthy_run_has_none_of_the_data_findings():
    ev = loader(nw=2, persistent=True) + ds() + run(60, 0.001, 0.02, fetch_ms=[5, 5])
    _, f = findings(session([stage("baseline", ev)]))
    assert not set(f) & {"worker-memory-growth", "iterable-duplicates", "idle-workers", "slow-worker",
                         "epoch-restart", "slow-read", "cacheable-prefix", "worker-startup"}
