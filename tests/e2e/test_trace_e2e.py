"""The trace of a real probe: every closed batch has its wait and compute, no track overlaps."""

import json
import os

import pytest
from conftest import run_cli, script
from tracecheck import closed_batches, key, problems, spans, thread_names

from loaderdoctor.render.trace import build_trace, render

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]


def test_trace_of_a_real_probe(tmp_path):
    out = tmp_path / "out"
    res = run_cli("probe", script("healthy_workers.py"), "--stages", "baseline", "--steps", "20", "--out", str(out),
                  "-q", timeout=180)
    assert res.returncode == 0, res.stderr
    with open(out / "session.json") as f:
        session = json.load(f)
    trace = build_trace(session)
    assert problems(trace) == []
    (stage,) = [s for s in session["stages"] if s["name"] == "baseline"]
    closed = closed_batches(stage["events"])
    assert len(closed) >= 20  # every measured step is among them (and the warm-up batches too)
    waits = {key(s) for s in spans(trace, "data wait", pid=1)}
    computes = {key(s) for s in spans(trace, "compute", pid=1)}
    assert closed <= waits and closed <= computes
    assert len(waits) == stage_batches(stage)
    startup = spans(trace, "worker start-up", pid=1)[0]
    assert len(startup["args"]["workers"]) == 2
    (span,) = spans(trace, "stage baseline")
    for s in spans(trace, pid=1):
        assert span["ts"] <= s["ts"] and s["ts"] + s["dur"] <= span["ts"] + span["dur"]
    assert "main" in thread_names(trace).values()
    assert trace["otherData"]["clamped_spans"] == 0
    path = tmp_path / "trace.json"
    with open(path, "w") as f:
        render(session, f)
    with open(path) as f:
        assert problems(json.load(f)) == []
    assert os.path.getsize(path) < 200_000


def stage_batches(stage: dict) -> int:
    return sum(1 for e in stage["events"] if e.get("e") == "b")
