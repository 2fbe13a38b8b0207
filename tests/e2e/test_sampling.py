"""The parent-side sampler: deadline scheduling (fake clock), a real process tree, GPU
degradation, and what the report keeps."""
import subprocess
import sys

import pytest

from loaderdoctor.observe.gpu import Gpus
from loaderdoctor.analysis.samples import downsample, loader_peaks
from loaderdoctor.observe.sampling import TreeSampler


class SlowSampler(TreeSampler):
    """Each sample 'takes' `cost` seconds of fake time; stops itself after `n` samples."""

    def __init__(self, cost, n, **kw):
        self.fake = [0.0]
        super().__init__(1, lambda: {}, stage="t", clock=lambda: self.fake[0], **kw)
        self.cost, self.n = cost, n

    def sample_once(self, n):
        self.fake[0] += self.cost
        self.system.append({"t": self.fake[0]})
        if len(self.system) >= self.n:
            self._halt.set()


def test_deadline_scheduling_records_lateness_exactly():
    s = SlowSampler(cost=0.35, n=4, interval=0.2)
    s.run()  # in this thread: waits are 0 since the fake clock is always past the deadline
    assert s.lateness == pytest.approx([0.15, 0.15, 0.15, 0.15])
    assert s.summary()["late_samples"] == 4


def test_no_lateness_when_samples_are_quick():
    s = SlowSampler(cost=0.0, n=3, interval=0.01)
    s.run()
    assert s.lateness == [0.0, 0.0, 0.0]


def test_real_tree_roles_and_memory():
    code = ("import time, multiprocessing as mp\n"
            "if __name__ == '__main__':\n"
            "    ps = [mp.Process(target=time.sleep, args=(30,)) for _ in range(2)]\n"
            "    [p.start() for p in ps]\n"
            "    print('up', flush=True)\n"
            "    time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"  # synced on the child's own line
        import psutil

        kids = {c.pid for c in psutil.Process(proc.pid).children()}
        ticks = iter(range(1000))
        # memory_budget=1.0: the memory pass's own CPU cost (a few ms, more on a loaded machine)
        # never postpones the next one past memory_every, so the count below is exact
        s = TreeSampler(proc.pid, lambda: {pid: "worker" for pid in kids}, stage="real", interval=0.05,
                        clock=lambda: 0.2 * next(ticks), memory_budget=1.0)
        for n in range(10):
            s.sample_once(n)
        roles = {r["pid"]: r["role"] for r in s.rows}
        assert roles[proc.pid] == "main" and sum(1 for r in roles.values() if r == "worker") == 2
        with_mem = [r for r in s.rows if "uss" in r]
        assert with_mem and all(r["uss"] > 0 for r in with_mem)
        assert len(with_mem) == 2 * 3  # memory on samples 0 and 5, for 3 processes
        peaks = loader_peaks(s.summary())
        assert peaks["peak_uss_mb"] > 0
        ds = downsample(s.summary(), limit=4)
        assert ds["downsampled_by"] == 3 and len(ds["series"]) == 4 and ds["points_measured"] == 10
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_gpu_unavailable_degrades_with_a_reason():
    g = Gpus()  # no NVIDIA driver on this machine
    if g.available:
        pytest.skip("a GPU is present")
    assert g.reason and g.devices() == [] and g.sample() == []


class FakeNvml:
    """The hardware seam (loaderdoctor.observe.gpu.Gpus's interface): what NVML would report for one
    GPU. Not run on a GPU: this machine has none."""
    available = True
    reason = ""

    def __init__(self):
        self.n = 0

    def devices(self):
        return [{"index": 0, "name": "Fake GPU", "memory_total_mb": 81559}]

    def sample(self):
        self.n += 1
        return [{"index": 0, "util": 10 * self.n, "mem_used_mb": 1000.0 + self.n, "power_w": 150.5}]


def test_gpu_samples_reach_the_series_and_the_environment():
    import os

    from loaderdoctor.observe import envinfo

    g = FakeNvml()
    ticks = iter(range(1000))
    s = TreeSampler(os.getpid(), lambda: {}, stage="baseline", interval=0.2, gpus=g, clock=lambda: 0.2 * next(ticks))
    for n in range(5):
        s.sample_once(n)
    series = downsample(s.summary())["series"]
    assert [p["gpu0_util"] for p in series] == [10, 20, 30, 40, 50]
    assert series[-1]["gpu0_mem_mb"] == 1005.0 and series[-1]["gpu0_power_w"] == 150.5
    env = envinfo.collect(g)
    assert env["gpus"] == [{"index": 0, "name": "Fake GPU", "memory_total_mb": 81559}]
    assert env["gpu_status"] == "available"


def test_a_costly_memory_pass_postpones_the_next(monkeypatch):
    """Memory reads stay within their CPU budget: a pass that cost 20 ms of the sampler's CPU
    at 5 Hz with a 1% budget waits 11 samples (not memory_every's 5) before the next."""
    import itertools
    import os

    from loaderdoctor.observe import sampling

    cpu = itertools.count(0.0, 0.02)  # each read of the thread's CPU clock is 20 ms later
    monkeypatch.setattr(sampling.time, "thread_time", lambda: next(cpu))
    ticks = iter(range(1000))
    s = TreeSampler(os.getpid(), lambda: {}, stage="t", interval=0.2, clock=lambda: 0.2 * next(ticks),
                    memory_every=5, memory_budget=0.01)
    for n in range(15):
        s.sample_once(n)
    with_mem = [r["t"] for r in s.rows if "uss" in r]
    assert len(with_mem) == 2 and with_mem[1] - with_mem[0] == pytest.approx(11 * 0.2)
