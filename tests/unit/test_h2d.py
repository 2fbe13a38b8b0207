"""The batch's copy to the GPU (child/h2d.py, analysis/transfer.py, rules/transfer.py) without a
GPU: real torch tensors from a real DataLoader, the real Tensor.to wrapped, a copy to the "meta"
device standing in for one to CUDA, and a fake torch.cuda whose events complete on a virtual GPU
clock (test_gpu_seam.FakeGpu's idea). What is checked is the logic; on a GPU it has not run
(benchmarks/gpu_check.py is outstanding)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from loaderdoctor.analysis import transfer
from loaderdoctor.analysis.report import build_report
from loaderdoctor.child import h2d
from loaderdoctor.session import Session


class FakeCuda:
    """Events complete when the virtual GPU clock reaches them; the stream moves `copy_s` on
    after each recorded event (so two events around one copy are `copy_s` apart), and
    nothing ever synchronizes."""

    def __init__(self, copy_s=0.002):
        self.gpu_now = 0.0
        self.reached = 0.0
        self.copy_s = copy_s
        self.recorded = 0
        self.syncs = 0

    def is_initialized(self):
        return True

    def synchronize(self):
        self.syncs += 1

    def Event(self, enable_timing=False):
        cuda = self

        class _Event:
            def record(self):
                cuda.recorded += 1
                self.at = cuda.gpu_now
                cuda.gpu_now += cuda.copy_s

            def query(self):
                return cuda.reached >= self.at

            def elapsed_time(self, other):
                return 1000.0 * (other.at - self.at)

        return _Event()


@pytest.fixture
def watched(monkeypatch):
    cuda = FakeCuda()
    watch = h2d.CopyWatch(cuda)
    for name in ("to", "cuda"):
        monkeypatch.setattr(torch.Tensor, name, h2d.wrap(watch, getattr(torch.Tensor, name)))
    return watch, cuda


def loader():
    x = torch.arange(64 * 12, dtype=torch.float32).reshape(64, 12)
    return DataLoader(TensorDataset(x, torch.arange(64)), batch_size=8)


def test_only_the_batchs_copies_to_a_device_are_timed(watched):
    watch, cuda = watched
    it = iter(loader())
    for i in range(h2d.KEEP_BATCHES + 2):
        xb, yb = next(it)
        watch.arm((xb, yb), 0, i)
        xb.to("meta", non_blocking=True)  # the batch to the device (meta stands in for cuda)
        yb.to(device="meta")
        xb.to(torch.float64)  # a cast: no device copy
        torch.ones(3).to("meta")  # not a batch tensor
    cuda.reached = cuda.gpu_now
    done = watch.ready()
    assert [d["i"] for d in done] == [0, 1]  # retired once KEEP_BATCHES newer batches came
    d = done[0]
    assert d["bytes"] == 8 * 12 * 4 + 8 * 8 and d["n"] == 2
    assert d["nb"] == 8 * 12 * 4 and d["pinned"] == 0 and d["device"] == "meta"
    assert d["gpu"] == pytest.approx(2 * cuda.copy_s)  # one copy_s per timed copy
    assert cuda.syncs == 0


def test_events_are_read_lazily_and_in_order(watched):
    watch, cuda = watched
    it = iter(loader())
    for i in range(h2d.KEEP_BATCHES + 3):
        (xb, _) = next(it)
        watch.arm((xb,), 0, i)
        xb.to("meta")
    assert watch.ready() == []  # the GPU has not reached any event: nothing waits for it
    cuda.reached = 3.5 * cuda.copy_s  # two copies done (events at 0, 1 and 2, 3), the third under way
    assert [d["i"] for d in watch.ready()] == [0, 1]
    cuda.reached = cuda.gpu_now
    assert [d["i"] for d in watch.ready()] == [2]


def test_a_batch_fetched_one_ahead_is_still_matched(watched):
    """Lightning and Accelerate fetch the next batch before moving this one to the device."""
    watch, cuda = watched
    it = iter(loader())
    b0, b1 = next(it), next(it)
    watch.arm(b0, 0, 0)
    watch.arm(b1, 0, 1)
    b0[0].cuda  # attribute access only
    b0[0].to("meta")
    for i in range(2, 2 + h2d.KEEP_BATCHES):
        watch.arm(next(it), 0, i)
    cuda.reached = cuda.gpu_now
    (d,) = watch.ready()
    assert (d["i"], d["bytes"]) == (0, 8 * 12 * 4)


def test_dicts_and_drain_copies_are_found(watched):
    """A batch as a mapping (HF's BatchEncoding is one); the drain's own copy is non_blocking."""
    watch, cuda = watched
    batch = {"input_ids": torch.zeros(4, 16, dtype=torch.long), "mask": torch.ones(4, 16, dtype=torch.bool),
             "meta": ["a", "b"]}
    watch.arm(batch, 1, 0)
    h2d.to_device(batch, "meta")
    for i in range(1, 1 + h2d.KEEP_BATCHES):
        watch.arm({}, 1, i)
    cuda.reached = cuda.gpu_now
    (d,) = watch.ready()
    assert d["bytes"] == 4 * 16 * 8 + 4 * 16 and d["nb"] == d["bytes"] and d["l"] == 1


def test_the_wrapper_gives_torch_compile_no_graph_break(watched):
    watch, _ = watched
    x = torch.randn(32)
    watch.arm((x,), 0, 0)

    def step(t):
        return (t.to(torch.float64) * 2).sum()

    explained = torch._dynamo.explain(step)(x)
    assert explained.graph_break_count == 0
    assert torch.compile(step, backend="eager")(x).item() == pytest.approx(2 * x.double().sum().item())


# ---- analysis and findings, from hand-built sessions

SITE = "train.py:20"


def run_events(n=40, wait=0.002, compute=0.018, copy=None, pinned=False, nb=False, workers=2):
    cfg = {"num_workers": workers, "batch_size": 8, "persistent_workers": True, "prefetch_factor": 2,
           "start_method": "fork", "pin_memory": False, "dataset": "__main__.Rows", "dataset_len": 800}
    ev = [{"e": "loader", "l": 0, "site": SITE, "config": cfg, "overridden": None},
          {"e": "it", "l": 0, "t": 0.0, "workers": [], "threads": [], "cuda_init": True},
          {"e": "b", "l": 0, "i": 0, "w": 0.05, "c": None, "n": 8, "s": 0.05}]
    for i in range(1, n):
        ev.append({"e": "b", "l": 0, "i": i, "w": wait, "c": compute, "n": 8})
        ev.append({"e": "o", "l": 0, "t": 0.02 * i, "f": None})
    ev.append({"e": "end", "l": 0, "c": compute, "why": "epoch"})
    if copy is not None:
        b = 4 << 20
        ev += [{"e": "h2d", "l": 0, "i": i, "bytes": b, "n": 2, "host": copy if not nb else 0.0001, "gpu": copy,
                "pinned": b if pinned else 0, "nb": b if nb else 0, "device": "cuda:0"} for i in range(n)]
    return ev


def stage(name, events, status="ok", exc=None):
    return {"name": name, "status": status, "seconds": 1.0, "detail": "", "events": events,
            "exit": {"how": "exception", "exc": exc} if exc else None, "returncode": 1 if exc else 0, "hang": None,
            "fatal_dumps": [], "oom_kills": {}}


def report(stages, notes=None):
    return build_report(Session(target={"path": "train.py", "kind": "script", "argv": []}, options={"warmup": 3},
                                environment={"cpu_count_effective": 2}, stages=stages, notes=notes or {}))


def test_the_copy_is_summarised_with_its_share_of_the_step():
    r = report([stage("baseline", run_events(copy=0.004))])
    h = r["baseline"]["h2d"]
    assert h["device"] == "cuda:0" and h["bytes_per_batch"] == 4 << 20 and h["tensors_per_batch"] == 2
    assert h["cost_s"] == pytest.approx(0.004) and h["share"] == pytest.approx(0.2)  # 4 ms of a 20 ms step
    assert h["pinned_share"] == 0 and h["gb_per_s"] == pytest.approx((4 << 20) / 0.004 / 1e9, rel=0.01)


def test_h2d_bound_fires_on_a_large_copy_with_the_fix_for_its_state():
    f = {x["id"]: x for x in report([stage("baseline", run_events(copy=0.004))])["findings"]}
    assert f["h2d-bound"]["impact"]["share"] == pytest.approx(0.2) and f["h2d-bound"]["severity"] == "critical"
    assert "4.0 MB" in f["h2d-bound"]["evidence"] and "cuda:0" in f["h2d-bound"]["evidence"]
    assert "pin_memory=True" in f["h2d-bound"]["fix"]
    pinned = {x["id"]: x for x in report([stage("baseline", run_events(copy=0.004, pinned=True))])["findings"]}
    assert "non_blocking=True" in pinned["h2d-bound"]["fix"] and "pin_memory=True" not in pinned["h2d-bound"]["fix"]
    both = {x["id"]: x for x in report([stage("baseline", run_events(copy=0.004, pinned=True, nb=True))])["findings"]}
    assert "side CUDA stream" in both["h2d-bound"]["fix"]


def test_a_small_copy_is_no_finding_and_a_crash_silences_it():
    small = {x["id"] for x in report([stage("baseline", run_events(copy=0.0004))])["findings"]}
    assert "h2d-bound" not in small  # 2% of the step
    exc = {"type": "RuntimeError", "message": "DataLoader worker (pid 77) is killed by signal: Segmentation fault.",
           "frames": []}
    crashed = report([stage("baseline", run_events(copy=0.004), status="crash", exc=exc)])
    assert crashed["verdict"] == "crash"
    assert "h2d-bound" not in {x["id"] for x in crashed["findings"]}


def test_pin_stage_is_planned_only_where_pinning_can_gain():
    base = {"device": "cuda:0", "pinned_share": 0.0, "share": 0.2}
    assert transfer.pin_skip_reason(base, {"pin_memory": False}) is None
    assert "already pins" in transfer.pin_skip_reason(base, {"pin_memory": True})
    assert "pinned memory" in transfer.pin_skip_reason({**base, "pinned_share": 1.0}, {})
    assert "little to gain" in transfer.pin_skip_reason({**base, "share": 0.01}, {})
    assert "no batch" in transfer.pin_skip_reason(None, {})


def test_pin_memory_finding_needs_a_measured_gain_that_keeps_the_loader_fast():
    pinned = run_events(n=60, copy=0.001, pinned=True, nb=True)
    notes = {"pin_memory": {"num_workers": 2, "current": 2, "rate_unpinned": 400.0, "keep": True}}
    r = report([stage("baseline", run_events(copy=0.004)), stage("pin-memory", pinned)], notes)
    p = r["pin_memory"]
    assert p["copy_s_pageable"] == pytest.approx(0.004) and p["copy_s_pinned"] == pytest.approx(0.001)
    assert p["speedup"] == pytest.approx(4.0) and p["share_saved"] == pytest.approx(0.15) and p["helps"]
    f = {x["id"]: x for x in r["findings"]}
    assert "4.00 ms" in f["pin-memory"]["evidence"] and "1.00 ms" in f["pin-memory"]["evidence"]
    # not confirmed on the real script (no confirm ran): kept as info, saying why
    assert f["pin-memory"]["severity"] == "info" and "Not recommended after measuring" in f["pin-memory"]["fix"]
    # a loader that the pin-memory thread slows below 95% of its rate: no finding
    slow = {"pin_memory": {**notes["pin_memory"], "rate_unpinned": 10_000.0}}
    r2 = report([stage("baseline", run_events(copy=0.004)), stage("pin-memory", pinned)], slow)
    assert not r2["pin_memory"]["helps"] and "pin-memory" not in {x["id"] for x in r2["findings"]}


def test_pinning_is_part_of_the_confirmed_settings_only_when_it_helped():
    from loaderdoctor.analysis import tuning

    cur = {"num_workers": 2, "persistent_workers": True}
    assert tuning.recommended_settings(cur, 2, 1, None, {"keep": True, "num_workers": 2}) == {"pin_memory": True}
    assert tuning.recommended_settings(cur, 2, 1, None, {"keep": False, "num_workers": 2}) == {}
    assert tuning.recommended_settings(cur, 4, 1, None, {"keep": True, "num_workers": 2}) == {"num_workers": 4}


def test_the_pin_memory_stage_drains_pinned_and_copies_as_the_script_did():
    from types import SimpleNamespace

    from loaderdoctor.orchestrate import experiments

    session = Session(target={}, options={"warmup": 3}, environment={"cpu_count_effective": 2},
                      stages=[stage("baseline", run_events(copy=0.004))],
                      notes={"workers_sweep": {"rates": [[2, 380.0], [4, 400.0]]}})
    asked = []

    def run(name, **kw):
        asked.append((name, kw))
        session.stages.append(stage(name, run_events(n=60, copy=0.001, pinned=True, nb=True)))
        return SimpleNamespace(status="ok")

    ctx = SimpleNamespace(session=session, run=run, train_loader={"num_workers": 2}, train_site=SITE,
                          opts=SimpleNamespace(steps=50, warmup=3))
    h = report(session.stages)["baseline"]["h2d"]
    experiments.pin_memory(ctx, 4, h)
    (name, kw), = asked
    assert name == "pin-memory" and kw["mode"] == "drain" and kw["copy_to"] == "cuda:0"
    assert kw["overrides"] == {"pin_memory": True, "num_workers": 4} and kw["override_site"] == SITE
    notes = session.notes["pin_memory"]
    assert notes["rate_unpinned"] == 400.0 and notes["keep"]
    assert notes["comparison"]["copy_s_pinned"] == pytest.approx(0.001)
