"""The adaptive plan's choices that need no process: when the start-method stages are worth
their runs, and when times are uneven (a deeper prefetch queue is tried only then)."""

from types import SimpleNamespace

import pytest

from loaderdoctor.orchestrate import probe


def _ctx(stages=(), static=None, default="fork", loader_method=None, kind="script", given=False, nproc=None):
    session = SimpleNamespace(stages=list(stages), notes={"static": static or {"has_guard": True}},
                              environment={"start_method_default": default})
    opts = SimpleNamespace(stages_given=given, nproc_per_node=nproc)
    return SimpleNamespace(opts=opts, target=SimpleNamespace(kind=kind), session=session,
                           train_loader={"start_method": loader_method})


OK = SimpleNamespace(status="ok")


def test_healthy_fork_script_skips_the_start_methods_and_says_how_to_ask():
    why = probe._context_skipped(_ctx(stages=[{"name": "baseline", "status": "ok"}]), OK)
    assert why and "--stages" in why and "fork" in why


@pytest.mark.parametrize("ctx,base", [
    (_ctx(given=True), OK),                                                     # asked for
    (_ctx(), SimpleNamespace(status="hang")),                                   # the baseline hung
    (_ctx(stages=[{"name": "workers-2", "status": "crash"}]), OK),              # an experiment crashed
    (_ctx(static={"has_guard": False, "toplevel_calls": ["main()"]}), OK),      # no main guard
    (_ctx(kind="notebook"), OK),
    (_ctx(loader_method="spawn"), OK),                                          # the loader asks for spawn
    (_ctx(default="spawn"), OK),                                                # macOS, Windows
    (_ctx(nproc=2), OK),
])
def test_start_methods_run_where_they_are_at_stake(ctx, base):
    assert probe._context_skipped(ctx, base) is None


def _stage_with_waits(waits):
    events = [{"e": "loader", "l": 0, "site": "t.py:1", "num_workers": 2, "batch_size": 1},
              {"e": "it", "l": 0, "t": 0.0, "workers": []}]
    t = 0.0
    for i, w in enumerate(waits):
        t += w
        events.append({"e": "b", "l": 0, "i": i, "w": w, "c": None if i == 0 else 0.001, "n": 1, "t": t})
    return {"name": "workers-2", "status": "ok", "events": events}


def test_uneven_steps_are_told_from_even_ones():
    even = _stage_with_waits([0.01] * 40)
    uneven = _stage_with_waits([0.01, 0.01, 0.01, 0.05] * 10)
    for st, want in ((even, False), (uneven, True)):
        session = SimpleNamespace(stage=lambda name, st=st: st if name == "workers-2" else None)
        ctx = SimpleNamespace(session=session, opts=SimpleNamespace(warmup=0))
        assert probe._uneven(ctx, "workers-2", "wait_s") is want


def test_start_methods_option_limits_the_context_runs_and_rejects_unknown_methods():
    from loaderdoctor.errors import EXIT_USAGE, LoaderDoctorError
    from loaderdoctor.orchestrate import experiments

    ran = []

    def run(name, **kw):
        ran.append((name, kw["overrides"]["multiprocessing_context"]))
        return OK

    ctx = _ctx()
    ctx.opts.start_methods = ["spawn", "fork"]
    ctx.opts.timeout, ctx.opts.first_batch_timeout = 30.0, None
    ctx.run, ctx.train_site = run, "t.py:1"
    ctx.train_loader["num_workers"] = 2
    experiments.start_methods(ctx, OK)
    assert ran == [("context-fork", "fork"), ("context-spawn", "spawn")]  # in the usual order, forkserver not run
    assert ctx.session.notes["start_methods"]["runs"] == {"fork": "context-fork", "spawn": "context-spawn"}
    with pytest.raises(LoaderDoctorError) as e:
        probe.plan(probe.ProbeOptions(start_methods=["fork", "thread"]))
    assert e.value.exit_code == EXIT_USAGE and "thread" in str(e.value)


def test_a_compute_bound_baseline_trims_the_plan_unless_the_stages_were_named(monkeypatch):
    monkeypatch.setattr(probe, "_baseline_wait", lambda session: 0.03)
    assert probe._compute_bound(_ctx()) == 0.03  # transforms skipped, a short fewer-workers check
    assert probe._compute_bound(_ctx(given=True)) is None  # --stages named them: each runs
    monkeypatch.setattr(probe, "_baseline_wait", lambda session: 0.4)
    assert probe._compute_bound(_ctx()) is None
    monkeypatch.setattr(probe, "_baseline_wait", lambda session: None)  # not measured: no trimming
    assert probe._compute_bound(_ctx()) is None
