"""The Chrome trace renderer, from hand-built sessions (no process started)."""

import io
import json
import math

from tracecheck import closed_batches, key, problems, spans, thread_names

from loaderdoctor.render.trace import build_trace, render


def _batches(n, *, loader=0, it_t=0.5, s=0.3, w0=0.2, w=0.05, c=0.1, t=False, end=True, workers=()):
    """An iterator's events: `it`, a first batch with start-up, n-1 more, and its end.
    With t=True every batch carries its arrival time, built like the recorder would."""
    evs = [{"e": "it", "l": loader, "t": it_t, "workers": list(workers), "threads": []}]
    at = it_t + s
    first = {"e": "b", "l": loader, "i": 0, "w": w0, "c": None, "n": 4, "s": s}
    evs.append({**first, "t": at} if t else first)
    for i in range(1, n):
        at += c + w
        ev = {"e": "b", "l": loader, "i": i, "w": w, "c": c, "n": 4}
        evs.append({**ev, "t": round(at, 6)} if t else ev)
    if end:
        evs.append({"e": "end", "l": loader, "c": c, "why": "epoch"})
    return evs


def _stage(name, events, *, seconds=10.0, status="ok", **extra):
    return {"name": name, "status": status, "seconds": seconds, "detail": "", "events": events, **extra}


def _session(*stages, **extra):
    return {"target": {"path": "train.py", "kind": "script", "argv": []}, "options": {}, "environment": {},
            "stages": list(stages), "tool": {"name": "loaderdoctor", "version": "0"}, **extra}


def _ok(trace):
    assert problems(trace) == []
    json.loads(json.dumps(trace, allow_nan=False))


def test_every_batch_has_a_wait_and_its_compute_in_order():
    evs = _batches(10)
    trace = build_trace(_session(_stage("baseline", evs)))
    _ok(trace)
    waits, computes = spans(trace, "data wait"), spans(trace, "compute")
    assert [s["args"]["batch"] for s in waits] == list(range(10))
    assert [s["args"]["batch"] for s in computes] == list(range(10))
    assert {key(s) for s in computes} == closed_batches(evs)
    main = [s for s in spans(trace, track="main") if s["name"] in ("data wait", "compute")]
    # wait 0, compute 0, wait 1, compute 1, ...: each batch's wait precedes its compute
    assert [s["name"] for s in main] == ["data wait", "compute"] * 10
    assert [s["args"]["batch"] for s in main] == [i for i in range(10) for _ in (0, 1)]
    for a, b in zip(main, main[1:]):
        assert a["ts"] + a["dur"] <= b["ts"]
    assert trace["displayTimeUnit"] == "ms"
    assert trace["otherData"]["clamped_spans"] == 0 and trace["otherData"]["downsampled"] == "no"


def test_absent_t_rebuilds_the_timeline_from_the_iterator_start():
    trace = build_trace(_session(_stage("baseline", _batches(2))))  # no hello: the recorder's zero is 0
    (startup,) = spans(trace, "worker start-up")
    assert (startup["ts"], startup["dur"]) == (500_000, 300_000)  # __iter__ at 0.5 s, first batch at 0.8 s
    w0, w1 = spans(trace, "data wait")
    c0, c1 = spans(trace, "compute")
    assert (w0["ts"], w0["dur"]) == (600_000, 200_000)
    assert (c0["ts"], c0["dur"]) == (800_000, 100_000)
    assert (w1["ts"], w1["dur"]) == (900_000, 50_000)
    assert (c1["ts"], c1["dur"]) == (950_000, 100_000)  # the iterator's end closes the last compute
    assert "rebuilt" in trace["otherData"]["timeline"]
    assert all(isinstance(e["ts"], int) for e in trace["traceEvents"] if e["ph"] != "M")


def test_t_when_present_is_used_and_the_torch_import_shifts_the_recorder_zero():
    evs = _batches(3, t=True)
    evs[2]["t"] += 1.0  # batch 1 arrived 1 s later than the waits alone say: a gap the rebuild cannot see
    hello = {"e": "hello", "pid": 1, "torch_import_s": 2.0}
    trace = build_trace(_session(_stage("baseline", [hello, *evs])))
    _ok(trace)
    w = spans(trace, "data wait")
    assert w[1]["ts"] + w[1]["dur"] == round((2.0 + evs[2]["t"]) * 1e6)
    assert "measured" in trace["otherData"]["timeline"]


def test_overlapping_input_is_clamped_and_counted():
    evs = _batches(4, t=True)
    evs[3]["t"] = evs[2]["t"] - 0.5  # arrival before its predecessor: the spans would overlap
    trace = build_trace(_session(_stage("baseline", evs)))
    _ok(trace)
    assert trace["otherData"]["clamped_spans"] >= 1


def test_stages_are_processes_laid_end_to_end_or_at_their_start():
    a = _stage("baseline", _batches(3), seconds=2.0)
    b = _stage("workers-2", _batches(3, loader=0), seconds=3.0)
    trace = build_trace(_session(a, b))
    _ok(trace)
    procs = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert procs == {1: "baseline", 2: "workers-2"}
    s1, s2 = spans(trace, "stage baseline"), spans(trace, "stage workers-2")
    assert s1[0]["ts"] == 0 and s2[0]["ts"] == s1[0]["dur"] == 2_000_000
    assert trace["otherData"]["stage_offsets"] == "end to end"
    # with "started" (time.time() at the stage's start): from the session's start
    a2, b2 = dict(a, started=1000.5), dict(b, started=1010.0)
    trace = build_trace(_session(a2, b2, started=1000.0))
    _ok(trace)
    assert spans(trace, "stage baseline")[0]["ts"] == 500_000
    assert spans(trace, "stage workers-2")[0]["ts"] == 10_000_000
    assert trace["otherData"]["stage_offsets"] == "started"


def test_stage_span_covers_everything_of_its_stage():
    trace = build_trace(_session(_stage("baseline", _batches(50), seconds=1.0)))  # events run past "seconds"
    _ok(trace)
    (stage,) = spans(trace, "stage baseline")
    for s in spans(trace, pid=1):
        assert stage["ts"] <= s["ts"] and s["ts"] + s["dur"] <= stage["ts"] + stage["dur"]


def test_worker_fetch_spans_on_their_own_tracks_inside_the_stage():
    plain = _stage("baseline", _batches(3, workers=[101, 102]), seconds=2.0)
    wf = [{"e": "wf", "pid": 201 + k % 2, "t0": 0.55 + 0.1 * k, "t1": 0.6 + 0.1 * k, "i": k,
           "tr": "RandomCrop" if k % 2 else None} for k in range(6)]
    wf.append({"e": "wf", "pid": 201, "t0": -1.0, "t1": -0.9, "i": 99, "tr": None})  # a clock before the stage's
    other = _stage("workers-2", _batches(3, workers=[201, 202]) + wf, seconds=2.0)
    trace = build_trace(_session(plain, other))
    _ok(trace)
    names = thread_names(trace)
    # no fetch spans in the first stage: its workers get no tracks
    assert not any(n.startswith("worker") for (pid, _), n in names.items() if pid == 1)
    assert sorted(n for (pid, _), n in names.items() if pid == 2 and n.startswith("worker")) == [
        "worker 201 (loader 0)", "worker 202 (loader 0)"]
    fetches = spans(trace, "fetch", pid=2)
    assert len(fetches) == 7 and {f["args"]["pid"] for f in fetches} == {201, 202}
    assert {f["args"]["transform"] for f in fetches} == {None, "RandomCrop"}
    (stage,) = spans(trace, "stage workers-2")
    for f in fetches:
        assert stage["ts"] <= f["ts"] and f["ts"] + f["dur"] <= stage["ts"] + stage["dur"]


def test_two_loaders_interleaved_get_a_track_each():
    train = _batches(6, loader=0)
    val = _batches(3, loader=1, it_t=1.0)
    evs = train[:4] + val + train[4:]
    trace = build_trace(_session(_stage("baseline", evs)))
    _ok(trace)
    names = set(thread_names(trace).values())
    assert {"main · loader 0", "main · loader 1"} <= names
    assert len(spans(trace, "data wait", track="main · loader 1")) == 3


def test_hang_is_an_instant_with_its_culprit():
    culprit = {"role": "worker", "pid": 4242, "function": "__getitem__", "file": "train.py", "line": 12}
    hang = {"stage": "baseline", "method": "py-spy", "processes": [], "culprit": culprit, "idle_s": 5.0,
            "waiting_first_batch": False}
    evs = _batches(3, end=False)
    trace = build_trace(_session(_stage("baseline", evs, status="hang", hang=hang, seconds=3.0)))
    _ok(trace)
    (inst,) = [e for e in trace["traceEvents"] if e["ph"] == "i"]
    assert inst["name"] == "hang" and inst["s"] == "p" and inst["args"]["culprit"] == culprit
    (gap,) = spans(trace, "no progress (hang)")
    assert gap["dur"] == 5_000_000 and gap["ts"] + gap["dur"] == inst["ts"]
    (stage,) = spans(trace, "stage baseline")
    assert stage["ts"] <= inst["ts"] <= stage["ts"] + stage["dur"]
    # the last batch's compute never closed: its wait is there, its compute is not
    assert len(spans(trace, "data wait")) == 3 and len(spans(trace, "compute")) == 2


def test_crash_is_an_instant_naming_the_worker_frame():
    msg = ("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
           '  File "/usr/lib/python3.11/site-packages/torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n'
           '  File "/home/u/train.py", line 14, in __getitem__\n    raise ValueError("bad sample")\n'
           "ValueError: bad sample\n")
    exit_ev = {"e": "exit", "how": "exception", "code": 1,
               "exc": {"type": "ValueError", "message": msg, "frames": [
                   {"function": "_next_data", "file": "/x/site-packages/torch/utils/data/dataloader.py", "line": 1},
                   {"function": "<module>", "file": "/home/u/train.py", "line": 30}]}}
    evs = _batches(3, end=False) + [exit_ev]
    trace = build_trace(_session(_stage("baseline", evs, status="crash", exit=exit_ev, detail="ValueError: bad")))
    _ok(trace)
    (inst,) = [e for e in trace["traceEvents"] if e["ph"] == "i"]
    assert inst["name"] == "crash" and inst["s"] == "p"
    assert inst["args"]["culprit"] == {"role": "worker", "pid": None, "function": "__getitem__",
                                       "file": "/home/u/train.py", "line": 14}
    assert inst["args"]["exception_type"] == "ValueError"
    # a fatal signal with no traceback: the dump's first frame
    dump = {"pid": 77, "role": "worker", "error": "Segmentation fault",
            "frames": [{"function": "load", "file": "/home/u/ds.py", "line": 3}]}
    trace = build_trace(_session(_stage("baseline", _batches(2, end=False), status="crash", fatal_dumps=[dump])))
    (inst,) = [e for e in trace["traceEvents"] if e["ph"] == "i"]
    assert inst["args"]["culprit"]["pid"] == 77 and inst["args"]["culprit"]["function"] == "load"


def test_large_stage_is_downsampled_and_says_so():
    evs = _batches(25_000, w=0.001, c=0.002)
    trace = build_trace(_session(_stage("baseline", evs, seconds=80.0)))
    _ok(trace)
    waits, computes = spans(trace, "data wait"), spans(trace, "compute")
    assert len(waits) <= 20_000 and len(waits) == 12_500
    assert {key(s) for s in waits} == {key(s) for s in computes}  # a kept batch keeps both spans
    assert "baseline: 25000 batch events, 1 in 2 kept" in trace["otherData"]["downsampled"]
    small = build_trace(_session(_stage("baseline", _batches(100))), max_batches=30)
    assert len(spans(small, "data wait")) == 25 and small["otherData"]["downsampled"] != "no"


def test_render_writes_json_and_survives_nan_and_empty_stages():
    evs = _batches(3)
    evs[2]["w"] = float("nan")
    session = _session(_stage("baseline", evs), _stage("transforms", [], status="failed", seconds=0.0),
                       skipped=[{"name": "sweep", "reason": "budget"}])
    buf = io.StringIO()
    render(session, buf)
    trace = json.loads(buf.getvalue())
    _ok(trace)
    assert trace["otherData"]["skipped_stages"] == "sweep (budget)"
    assert [e["name"] for e in trace["traceEvents"] if e["ph"] == "i"] == ["failed"]
    assert all(math.isfinite(e["ts"]) for e in trace["traceEvents"] if "ts" in e)
    assert build_trace({"stages": []})["traceEvents"] == []


def test_the_checker_catches_what_it_should():
    meta = [{"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "s"}},
            {"ph": "M", "name": "thread_name", "pid": 1, "tid": 5, "args": {"name": "main"}}]
    x = {"ph": "X", "name": "a", "pid": 1, "tid": 5, "ts": 0, "dur": 10, "args": {}}
    assert problems({"traceEvents": [*meta, x, dict(x, ts=10)], "displayTimeUnit": "ms"}) == []
    assert "overlaps" in problems({"traceEvents": [*meta, x, dict(x, ts=9)], "displayTimeUnit": "ms"})[0]
    assert "overlaps" in problems({"traceEvents": [*meta, x, dict(x, ts=5, dur=0)], "displayTimeUnit": "ms"})[0]
    assert "bad ts" in problems({"traceEvents": [*meta, dict(x, ts=-1)], "displayTimeUnit": "ms"})[0]
    assert "no thread_name" in problems({"traceEvents": [meta[0], dict(x, tid=6)], "displayTimeUnit": "ms"})[0]


def test_samples_are_counter_tracks_on_the_batches_clock():
    """NVML and CPU samples (a fake GPU's values: no GPU here) become counter events; a sample
    taken when the parent saw the first batch lands where that batch's wait ends."""
    evs = _batches(3, t=True)
    hello = {"e": "hello", "pid": 1, "torch_import_s": 2.0}
    system = [{"t": 4.0, "cpu": 55.0, "gpu0_util": 80, "gpu0_sm_mhz": 1980, "gpu0_pcie_rx_mb_s": 2048.0,
               "gpu0_power_w": None},
              {"t": 4.2, "cpu": 60.0, "gpu0_util": float("nan")}]
    trace = build_trace(_session(_stage("baseline", [hello, *evs], window=[4.0, 9.0],
                                        samples={"system": system})))
    _ok(trace)
    counters = [e for e in trace["traceEvents"] if e["ph"] == "C"]
    gpu = [e for e in counters if e["name"] == "GPU 0"]
    cpu = [e for e in counters if e["name"] == "system CPU %"]
    assert [c["args"]["cpu %"] for c in cpu] == [55.0, 60.0]
    assert len(gpu) == 1 and gpu[0]["args"] == {"util %": 80, "SM clock MHz": 1980, "PCIe to GPU MB/s": 2048.0}
    first_wait = spans(trace, "data wait")[0]
    assert gpu[0]["ts"] == first_wait["ts"] + first_wait["dur"]  # the two clocks meet at the first batch
    assert cpu[1]["ts"] - cpu[0]["ts"] == 200_000


def test_counter_samples_are_strided_past_the_cap(monkeypatch):
    from loaderdoctor.render import trace as trace_mod

    monkeypatch.setattr(trace_mod, "MAX_COUNTER_SAMPLES", 10)
    system = [{"t": 0.2 * k, "cpu": float(k)} for k in range(35)]
    trace = build_trace(_session(_stage("baseline", _batches(3), samples={"system": system})))
    _ok(trace)
    cpu = [e["args"]["cpu %"] for e in trace["traceEvents"] if e["ph"] == "C"]
    assert cpu == [float(k) for k in range(0, 35, 4)]  # 1 in 4 kept: at most 10
