"""Pure pieces, exactly: timing with a fake clock, step statistics, verdicts, parsing."""
import pytest
import torch

from loaderdoctor.analysis import rules as diagnose
from loaderdoctor.analysis import stepstats as metrics
from loaderdoctor.child.describe import count_samples
from loaderdoctor.child.recorder import Recorder, StopProbe


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s


class FakeIter:
    pass


def _drive(rec, clock, it, batches, wait, compute):
    """Simulate the hooked __next__: wait, batch arrives, compute, next request."""
    for _ in range(batches):
        t0 = clock()
        st = rec.before_next(it, t0)
        clock.advance(wait)
        rec.on_batch(st, t0, clock(), torch.zeros(4, 2))
        clock.advance(compute)


def test_recorder_timings_with_fake_clock():
    lines, clock = [], FakeClock()
    rec = Recorder(lines.append, steps=1000, warmup=0, clock=clock)
    it = FakeIter()
    from loaderdoctor.child.recorder import _IterState

    it._ld_state = _IterState(0, clock())
    clock.advance(0.5)  # worker start-up before the first batch
    _drive(rec, clock, it, batches=5, wait=0.030, compute=0.010)
    rec.on_exhausted(it._ld_state, clock())
    import json

    events = [json.loads(x) for x in lines]
    assert events[0]["s"] == pytest.approx(0.530)  # start-up counts from iter() to the first batch
    steps = metrics.steps_by_loader(events)[0].steps
    assert [s.wait for s in steps] == pytest.approx([0.03] * 5)
    assert [s.compute for s in steps] == pytest.approx([0.01] * 5)
    summary = metrics.step_summary(metrics.steps_by_loader(events)[0], warmup=0)
    assert summary["steps"] == 4  # the first batch is start-up, not a step
    assert summary["data_wait_fraction"] == pytest.approx(0.75)
    assert summary["samples_per_s"] == pytest.approx(4 / 0.04)


def test_recorder_stops_after_steps_with_a_base_exception():
    lines, clock = [], FakeClock()
    rec = Recorder(lines.append, steps=3, warmup=1, clock=clock)
    it = FakeIter()
    with pytest.raises(StopProbe):
        _drive(rec, clock, it, batches=100, wait=0.01, compute=0.01)
    assert not issubclass(StopProbe, Exception)
    import json

    events = [json.loads(x) for x in lines]
    assert sum(1 for e in events if e["e"] == "b") == 1 + 1 + 3  # first + warm-up + measured
    assert events[-1] == {"e": "stop", "why": "steps"}
    assert events[-2]["e"] == "end" and events[-2]["c"] == pytest.approx(0.01)


def test_recorder_time_bound():
    lines, clock = [], FakeClock()
    rec = Recorder(lines.append, steps=10**6, warmup=0, max_seconds=1.0, clock=clock)
    with pytest.raises(StopProbe):
        _drive(rec, clock, FakeIter(), batches=1000, wait=0.05, compute=0.05)
    assert lines[-1] == '{"e":"stop","why":"time"}'


@pytest.mark.parametrize("batch,n", [
    ([[1, 2]], 1),
    ((__import__("torch").zeros(7, 3), __import__("torch").zeros(7)), 7),
    ({"image": __import__("torch").zeros(5, 2)}, 5),
    ([], 1),
    ("text", 1),
])
def test_count_samples(batch, n):
    assert count_samples(batch) == n


def test_measured_steps_leave_out_first_batches_and_warmup():
    ev = [{"e": "it", "l": 0}, {"e": "b", "l": 0, "i": 0, "w": 1.0, "c": None, "n": 2, "s": 1.0}]
    for i in range(1, 6):
        ev.append({"e": "b", "l": 0, "i": i, "w": 0.1 * i, "c": 0.5, "n": 2})
    ev.append({"e": "end", "l": 0, "c": 0.5, "why": "epoch"})
    ls = metrics.steps_by_loader(ev)[0]
    kept = metrics.measured_steps(ls, warmup=2)
    assert [round(s.wait, 3) for s in kept] == [0.3, 0.4, 0.5]
    assert all(s.compute == 0.5 for s in kept)


def _report(frac, steps=50, **extra):
    r = {"baseline": {"steps": steps, "data_wait_fraction": frac, "wait_s": {"median": 0.02},
                      "compute_s": {"median": 0.01}, "samples_per_s": 100.0},
         "loaders": [{"role": "train", "num_workers": 0}], "stages": []}
    r.update(extra)
    return r


@pytest.mark.parametrize("frac,verdict", [(0.2, "data-bound"), (0.9, "data-bound"), (0.19, "balanced"),
                                          (0.05, "balanced"), (0.049, "compute-bound"), (None, "inconclusive")])
def test_baseline_verdict_thresholds(frac, verdict):
    assert diagnose.verdict(_report(frac)) == verdict


def test_too_few_steps_is_inconclusive_and_silent():
    v, findings, _ = diagnose.diagnose(_report(0.9, steps=2))
    assert v == "inconclusive" and findings == []


def test_data_bound_finding_quotes_the_measurement():
    v, findings, rec = diagnose.diagnose(_report(0.62))
    (f,) = findings
    assert f["id"] == "data-bound" and "62%" in f["evidence"] and "50 measured steps" in f["evidence"]
    assert "more workers" in f["fix"] and "(now 0)" in f["fix"]
    assert rec["measured_speedup"] is None  # nothing confirmed: no number is made up


def test_drain_time_bound_counts_from_the_first_batch():
    lines, clock = [], FakeClock()
    rec = Recorder(lines.append, steps=10**6, warmup=0, clock=clock, mode="drain", drain_seconds=1.0)
    rec.drain_from_first_batch = True  # what drain() arms before iterating
    it = FakeIter()
    clock.advance(30.0)  # workers took 30 s to start: not part of the bound
    st = rec.before_next(it, clock())
    clock.advance(0.1)
    rec.on_batch(st, clock() - 0.1, clock(), torch.zeros(2, 2))
    assert rec.max_seconds == pytest.approx(30.1 + 1.0 - 0.0)
    with pytest.raises(StopProbe):
        _drive(rec, clock, it, batches=100, wait=0.05, compute=0.0)
    batches = sum(1 for x in lines if '"e":"b"' in x)
    assert 19 <= batches <= 22  # about 1 s of 0.05 s batches after the first


def test_recommended_settings():
    from loaderdoctor.analysis.tuning import recommended_settings

    cur = {"num_workers": 0, "persistent_workers": False, "prefetch_factor": None}
    assert recommended_settings(cur, 4, iterators=1) == {"num_workers": 4}
    assert recommended_settings(cur, 4, iterators=3) == {"num_workers": 4, "persistent_workers": True}
    keep = {"keep": True, "num_workers": 4, "value": 4}
    assert recommended_settings(cur, 4, 1, keep) == {"num_workers": 4, "prefetch_factor": 4}
    assert recommended_settings(cur, 4, 1, dict(keep, keep=False)) == {"num_workers": 4}
    assert recommended_settings(cur, 0, 5) == {}  # nothing measured better: nothing to change


def test_sweep_choice_goes_past_the_cores_only_with_room_on_the_cpus_and_a_clear_gain():
    from loaderdoctor.analysis.tuning import choose, cpu_limited

    io = [(0, 78.0), (1, 77.0), (2, 155.0), (4, 309.0), (8, 630.0)]
    assert choose(io, 2) == 8
    # the same rates, but 2 workers were CPU-limited: more only win CPU share
    assert choose(io, 2, cpu_limited={2}) == 2
    # a gain under PAST_CORES past the cores: stay within
    assert choose([(0, 100.0), (2, 200.0), (4, 215.0)], 2) == 2
    # the fewest workers within CLOSE of the best
    assert choose([(0, 100.0), (1, 196.0), (2, 200.0)], 2) == 1
    assert choose([(0, None), (1, None)], 2) is None
    assert cpu_limited({"busy": 0.9, "worker_cpu_share": 0.1}).startswith("the CPUs were 90% busy")
    assert "computing 74%" in cpu_limited({"busy": 0.8, "worker_cpu_share": 0.74})
    assert cpu_limited({"busy": 0.1, "worker_cpu_share": 0.05}) is None
    assert cpu_limited({"busy": 0.5, "worker_cpu_share": None}) is None  # num_workers=0
    assert cpu_limited(None) is None


def test_sweep_stops_after_two_flat_steps():
    from loaderdoctor.analysis.tuning import should_stop

    assert not should_stop([(0, 100.0), (1, 180.0), (2, 300.0)])
    assert not should_stop([(0, 100.0), (1, 102.0)])
    assert should_stop([(0, 100.0), (1, 102.0), (2, 101.0)])
    assert should_stop([(0, 100.0), (1, None), (2, None)])


def test_window_load_reads_only_the_batches_window():
    from loaderdoctor.analysis.samples import window_load

    rows, system = [], []
    for t in range(10):
        busy_phase = 3 <= t <= 6
        system.append({"t": float(t), "cpu": 95.0 if busy_phase else 10.0})
        rows.append({"t": float(t), "pid": 1, "role": "main", "cpu": 20.0})
        rows.append({"t": float(t), "pid": 2, "role": "worker", "cpu": 90.0 if busy_phase else 0.0})
        rows.append({"t": float(t), "pid": 3, "role": "runner", "cpu": 50.0})  # not the loader's
        if t >= 5:  # a worker found at t=5 reads 0.0 there (its CPU counter was just primed)
            rows.append({"t": float(t), "pid": 4, "role": "worker", "cpu": 0.0 if t == 5 else 90.0})
    load = window_load({"rows": rows, "system": system}, [2.5, 6.5], cpus=2)
    assert load["system_cpu_pct"] == 95.0 and load["samples"] == 4
    assert load["loader_cpu_cores"] == pytest.approx(1.325, abs=0.006)  # (3 * 1.1 + 2.0) / 4
    assert load["busy"] == 0.95
    assert load["worker_cpu_share"] == 0.9
    # a CPU quota smaller than the machine: the process tree shows it
    assert window_load({"rows": rows, "system": system}, [2.5, 6.5], cpus=1)["busy"] == 1.0
    assert window_load({"rows": rows, "system": system}, None, cpus=2) is None


def test_a_worker_dead_by_a_signal_is_named_from_its_dump_when_its_exit_code_was_not_read():
    from loaderdoctor.analysis.crash import classify

    exc = {"type": "ConnectionResetError", "message": "[Errno 104] Connection reset by peer", "frames": []}
    frames = [{"function": "native_decode", "file": "/src/train.py", "line": 10}]
    dump = {"pid": 4242, "role": "worker", "error": "Segmentation fault", "frames": frames}
    rec = classify("baseline", exc, 1, [dump], worker_exits={"4242": None})
    assert (rec["role"], rec["pid"], rec["signal"]) == ("worker", 4242, "SIGSEGV")
    assert "ConnectionResetError" in rec["message"]
    # no dump and no exit code: the main process's own error, as it was
    assert classify("baseline", exc, 1, [], worker_exits={"4242": None})["role"] == "main"


def test_emitter_gathers_batch_events_and_keeps_the_order():
    import os

    from loaderdoctor.child.emitter import Emitter

    r, w = os.pipe()
    try:
        os.set_blocking(r, False)

        def written():
            try:
                return os.read(r, 1 << 16).decode().splitlines()
            except BlockingIOError:
                return []

        e = Emitter(w)
        e.batch("b1", now=10.0)  # nothing written for FLUSH_S: at once
        assert written() == ["b1"]
        e.batch("b2", now=10.01)
        e.batch("b3", now=10.02)
        assert written() == []  # gathered
        e("stop")  # an event the parent acts on: at once, after the batches before it
        assert written() == ["b2", "b3", "stop"]
        e.batch("b4", now=10.03)
        e.batch("b5", now=10.0 + Emitter.FLUSH_S + 0.001)
        assert written() == ["b4", "b5"]
        e.batch("b6", now=10.07)
        e.flush()
        assert written() == ["b6"]
    finally:
        os.close(r)
        os.close(w)
