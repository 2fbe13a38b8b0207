"""The child's side of the data findings, in this process (no worker is started): the workers'
event lines on a real pipe, the emitter's atomic chunks, the dataset description, the
deterministic-prefix heuristic, and the sampler's budget for workers' memory."""

from __future__ import annotations

import json
import os
import random
from collections import namedtuple

import numpy as np
import pytest
import torch

from loaderdoctor.child import cacheprefix, datasetinfo, workerevents
from loaderdoctor.child.emitter import Emitter
from loaderdoctor.observe.sampling import TreeSampler


def _drain(fd: int) -> list[dict]:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_worker_lines_are_whole_and_each_write_fits_pipe_buf(pipe, monkeypatch):
    r, w = pipe
    sizes = []
    real = os.write
    monkeypatch.setattr(workerevents.os, "write", lambda fd, b: sizes.append(len(b)) or real(fd, b))
    ev = workerevents.WorkerEvents(w, t0=100.0, site=0, worker_id=1)
    for i in range(300):
        ev.fetched(100.0 + i / 1000, 100.0005 + i / 1000, i, 4, "Resize" if i % 2 else None)  # 0.3 s in all
    ev.flush()
    got = _drain(r)
    assert [e["i"] for e in got] == list(range(300))
    assert got[1] == {"e": "wf", "l": 0, "w": 1, "pid": os.getpid(), "t0": 0.001, "t1": 0.0015, "i": 1, "n": 4,
                      "tr": "Resize"}
    assert sizes and max(sizes) <= workerevents.PIPE_BUF and len(sizes) < 30  # batched, never over PIPE_BUF


def test_the_emitter_writes_big_batches_in_atomic_chunks(pipe, monkeypatch):
    r, w = pipe
    sizes = []
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, b: sizes.append(len(b)) or real(fd, b))
    em = Emitter(w)
    for i in range(200):
        em._pending.append(json.dumps({"e": "b", "l": 0, "i": i, "w": 0.001}))
    em.flush()
    assert [e["i"] for e in _drain(r)] == list(range(200))
    assert max(sizes) <= workerevents.PIPE_BUF and len(sizes) > 1


def test_the_channel_is_never_a_reused_descriptor(pipe, tmp_path):
    r, w = pipe
    ch = workerevents.channel_of(Emitter(w))
    assert ch is not None and workerevents.open_channel(ch) == w  # as a forked worker inherits it
    os.close(w)
    with open(tmp_path / "user-file", "w") as f:  # the number now belongs to something else
        if f.fileno() == w:
            assert workerevents.open_channel(ch) is None
    assert workerevents.open_channel({**ch, "ino": ch["ino"] + 1}) is None


def test_the_fetch_wrapper_records_fetches_stream_ends_and_digests(pipe, monkeypatch):
    r, w = pipe

    class Fetcher:
        def __init__(self, items):
            self.items = iter(items)

        def fetch(self, index):
            return [next(self.items) for _ in index]

    monkeypatch.setattr(workerevents, "_STATE", workerevents.WorkerEvents(w, t0=0.0, site=3, worker_id=2))
    fetch = workerevents._wrap(Fetcher.fetch, iterable=True)
    f = Fetcher([torch.full((2,), float(i)) for i in range(4)])
    for _ in range(2):
        fetch(f, [0, 1])
    with pytest.raises(StopIteration):
        fetch(f, [0, 1])
    got = _drain(r)
    kinds = [e["e"] for e in got]
    assert kinds.count("wf") == 2 and kinds.count("wh") == 2 and kinds[-1] == "wx"
    assert got[-1]["n"] == 2 and got[-1]["l"] == 3 and got[-1]["w"] == 2
    assert all(e["n"] == 2 for e in got if e["e"] == "wf")


def test_digests_tell_equal_batches_from_different_ones():
    a = [torch.arange(8.0).reshape(2, 4), {"label": torch.tensor([1, 2])}]
    b = [torch.arange(8.0).reshape(2, 4), {"label": torch.tensor([1, 2])}]
    c = [torch.arange(8.0).reshape(2, 4) + 1, {"label": torch.tensor([1, 2])}]
    assert workerevents.digest(a) == workerevents.digest(b) != workerevents.digest(c)
    assert workerevents.digest(np.zeros(3)) != workerevents.digest(np.ones(3))


def test_the_dataset_description_names_large_python_containers():
    class Records:
        def __init__(self):
            self.items = [{"path": f"/d/{i}.jpg", "label": i} for i in range(20_000)]
            self.small = list(range(10))
            self.array = np.zeros(50_000)
            self.objects = np.array([f"s{i}" for i in range(20_000)], dtype=object)

    found = {c["attr"]: c for c in datasetinfo.python_containers(Records())}
    assert set(found) == {"items", "objects"}
    assert found["items"]["len"] == 20_000 and found["items"]["type"] == "list"
    assert 2 < found["items"]["mb"] < 20 and found["items"]["objects"] >= 40_000


class Resize:
    def __call__(self, x):
        return x


class RandomFlip:
    def __call__(self, x):
        return x


class Jitter:
    def __call__(self, x):
        return x * torch.empty(1).uniform_(0.9, 1.1)


class Maybe:
    def __init__(self):
        self.p = 0.5

    def __call__(self, x):
        return x


def shuffle_words(x):
    return random.sample(x, len(x))


@pytest.mark.parametrize("step,random_", [(Resize(), False), (RandomFlip(), True), (Jitter(), True),
                                          (Maybe(), True), (shuffle_words, True), (str.lower, False)])
def test_the_deterministic_prefix_heuristic(step, random_):
    assert (cacheprefix.randomness(step) is not None) is random_


def test_the_prefix_ends_at_the_first_random_step():
    k, why = cacheprefix.deterministic_prefix([Resize(), Resize(), Jitter(), Resize()], ["A", "B", "C", "D"])
    assert k == 2 and why.startswith("C: Jitter.__call__ uses uniform_")


def test_workers_memory_is_read_once_past_start_up_then_each_interval_within_the_budget():
    Mem = namedtuple("Mem", "uss pss rss")

    class P:
        def __init__(self, pid):
            self.pid = pid

        def memory_full_info(self):
            return Mem(self.pid * 2**20, None, 0)

    s = TreeSampler(1, lambda: {}, stage="t", worker_memory_interval=0.19)
    s._known = [P(1), P(7), P(8)]
    s._worker_time = 1.0  # workers alive for a second: 5 ms of their half of the 1% budget, + 5 ms
    roles = {7: "worker", 8: "worker"}
    s._worker_memory_pass(1.0, roles)  # new: start-up, which the analysis drops, is not read
    assert s.worker_memory == []
    s._worker_memory_pass(1.1, roles)  # not due yet
    s._worker_memory_pass(1.2, roles)
    s._worker_memory_pass(1.3, roles)  # read at 1.2: not due again yet
    s._worker_memory_pass(1.4, roles)
    assert [(m["t"], m["pid"]) for m in s.worker_memory] == [(1.2, 7), (1.2, 8), (1.4, 7), (1.4, 8)]
    s._worker_cpu_s = 1.0  # the workers' share of the budget is spent
    s._worker_memory_pass(1.6, roles)
    assert len(s.worker_memory) == 4


def test_the_ablation_bounds_what_caching_the_prefix_can_gain():
    # seconds for the same batches with prefix lengths 0..2: the prefix (k=1) adds 0.05 s of 2.0
    assert cacheprefix.bound({0: 1.0, 1: 1.05, 2: 3.0}, 1, 2) == pytest.approx(0.025)
    assert cacheprefix.bound({0: 1.0, 1: 0.9, 2: 3.0}, 1, 2) == 0.0  # faster than nothing: noise, no cost
    assert cacheprefix.bound({0: 1.0, 2: 3.0}, 1, 2) is None  # a prefix not timed
    assert cacheprefix.bound({0: 1.0, 1: 1.0, 2: 1.0}, 1, 2) is None  # no transform time to share


class _Piped(torch.utils.data.Dataset):
    def __init__(self, steps):
        self.transform = Compose(steps)

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return self.transform(torch.full((4,), float(i)))


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class _Rec:
    def __init__(self):
        self.events, self.steps, self.max_seconds = [], 50, 10.0

    def emit(self, line):
        self.events.append(json.loads(line))


@pytest.mark.parametrize("ablation,measured", [({0: 0.10, 1: 0.101, 2: 0.60}, False),
                                               ({0: 0.10, 1: 0.50, 2: 0.60}, True)])
def test_a_cheap_prefix_is_not_measured_and_says_why(ablation, measured):
    from loaderdoctor.child.pipeline import find_pipeline

    loader = torch.utils.data.DataLoader(_Piped([Resize(), Jitter()]), batch_size=8, num_workers=0)
    pipe, _ = find_pipeline(loader.dataset)
    rec = _Rec()
    cacheprefix.what_if(rec, loader, pipe, ablation)
    ev = rec.events[-1]
    assert ev["e"] == "cache_whatif" and ev["prefix"] == ["Resize"]
    if measured:  # the bound allows a gain: the what-if runs with the real loader
        assert ev["status"] == "ok" and ev["uncached"]["batches"] > 0 and ev["cached"]["batches"] > 0, ev
    else:
        assert ev["status"] == "not-measured" and "0.2% of the transforms' time" in ev["why"], ev
        assert "at most 1.00x" in ev["why"]
    assert (rec.steps, rec.max_seconds) == (50, 10.0) and pipe.names() == ["Resize", "Jitter"]  # restored
