"""The CUDA seam without a GPU: a fake torch.cuda whose events complete on a virtual GPU clock.
What is checked is the logic (events, lazy reads, no synchronize, the gap's arithmetic), not a
GPU: that run is outstanding until a GPU machine is lent (benchmarks/gpu_check.py)."""

from __future__ import annotations

from loaderdoctor.analysis import stepstats
from loaderdoctor.child.cuda import GpuGaps
from loaderdoctor.child.recorder import Recorder


class FakeGpu:
    """A stream whose queued work ends at `busy_until`; an event completes when the GPU reaches it."""

    def __init__(self):
        self.now = 0.0  # host time (s)
        self.busy_until = 0.0
        self.syncs = 0

    def queue(self, seconds):
        self.busy_until = max(self.busy_until, self.now) + seconds

    def is_initialized(self):
        return True

    def synchronize(self):  # must never be called on the per-step path
        self.syncs += 1

    def Event(self, enable_timing=False):
        gpu = self

        class _Event:
            def record(self):
                self.at = max(gpu.now, gpu.busy_until)  # when the stream reaches it

            def query(self):
                return gpu.now >= self.at

            def elapsed_time(self, other):
                return 1000.0 * (other.at - self.at)

        return _Event()


def test_gap_is_zero_while_the_gpu_has_queued_work_and_the_wait_when_it_ran_dry():
    gpu = FakeGpu()
    gaps = GpuGaps(gpu)
    # boundary 0: the GPU has 50 ms queued, the host waits 20 ms for data: the GPU never idles
    gpu.queue(0.05)
    e = gaps.enter()
    gpu.now += 0.02
    gaps.leave(e, 0, 0)
    assert gaps.ready() == []  # not read yet: the GPU has not reached the events (no wait for it)
    gpu.now = 0.06
    (site, index, gap), = gaps.ready()
    assert (site, index) == (0, 0) and gap == 0.0
    # boundary 1: the GPU is idle, the host waits 30 ms: the whole wait is a GPU-idle gap
    e = gaps.enter()
    gpu.now += 0.03
    gaps.leave(e, 1, 0)
    (_, _, gap), = gaps.ready()
    assert abs(gap - 0.03) < 1e-9
    assert gpu.syncs == 0


def test_gaps_reach_the_baseline_as_the_gpu_idle_share():
    rec_lines = []
    rec = Recorder(rec_lines.append, steps=100, warmup=0)
    rec.on_gpu_gaps([(0, i, 0.004) for i in range(10)], 1.0)
    events = [{"e": "b", "l": 0, "i": i, "w": 0.005, "c": 0.005 if i else None, "n": 1, **({"s": 0.01} if i == 0 else {})}
              for i in range(11)] + [{"e": "end", "l": 0, "c": 0.005, "why": "epoch"}]
    import json

    events += [json.loads(line) for line in rec_lines]
    ls = stepstats.steps_by_loader(events)[0]
    idle = stepstats.gpu_idle(events, 0, stepstats.measured_steps(ls, 0))
    assert idle["boundaries"] == 10 and abs(idle["fraction"] - 0.4) < 1e-6  # 4 ms idle of each 10 ms step


def test_nvml_fields_are_read_each_on_its_own(monkeypatch):
    """A fake pynvml (the NVML seam; not run on a GPU): SM clock and PCIe throughput are sampled
    with utilisation and memory, and a field the board does not support stays None alone."""
    import sys
    import types

    from loaderdoctor.observe.gpu import Gpus
    from loaderdoctor.observe.sampling import TreeSampler

    class NotSupported(Exception):
        pass

    def power(h):
        raise NotSupported("Not Supported")

    nv = types.SimpleNamespace(
        NVML_CLOCK_SM=1, NVML_PCIE_UTIL_TX_BYTES=0, NVML_PCIE_UTIL_RX_BYTES=1,
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1, nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetName=lambda h: b"Fake H200",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30),
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetClockInfo=lambda h, kind: {1: 1980}[kind],
        nvmlDeviceGetPcieThroughput=lambda h, kind: {1: 2048 * 1024, 0: 512}[kind],  # KB/s
    )
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    g = Gpus()
    assert g.available and g.devices() == [{"index": 0, "name": "Fake H200", "memory_total_mb": 81920}]
    assert g.sample() == [{"index": 0, "util": 87, "mem_used_mb": 3072.0, "power_w": None, "sm_mhz": 1980,
                           "pcie_rx_mb_s": 2048.0, "pcie_tx_mb_s": 0.5}]
    s = TreeSampler(1, lambda: {}, stage="t", gpus=g)
    s.sample_once(1)
    row = s.system[-1]
    assert (row["gpu0_util"], row["gpu0_sm_mhz"], row["gpu0_pcie_rx_mb_s"], row["gpu0_power_w"]) == (87, 1980, 2048.0, None)
