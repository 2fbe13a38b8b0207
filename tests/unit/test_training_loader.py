"""The step is the optimizer's: which loader is training, what the loop's boundary says,
how the child leaves, and what a failed experiment may (not) claim. No process started."""

from __future__ import annotations

import pytest

from loaderdoctor.analysis import stepstats
from loaderdoctor.analysis.rules import diagnose
from loaderdoctor.analysis.rules.completeness import rule_probe_incomplete
from loaderdoctor.analysis.rules.context import rule_fork_unsafe, rule_spawn_unsafe
from loaderdoctor.child.recorder import Recorder, StopProbe


def _events(train_batches=10, eval_batches=30):
    """A training epoch on loader 0 (an optimizer step after each batch), then a longer
    evaluation pass on loader 1 under no_grad: "most batches" would pick the eval loader."""
    ev, t = [{"e": "it", "l": 0, "t": 0.0, "workers": []}], 0.0
    for i in range(train_batches):
        t += 0.01
        ev.append({"e": "b", "l": 0, "i": i, "w": 0.004, "c": None if i == 0 else 0.006, "n": 8, "t": t,
                   **({"s": 0.01, "g": 1} if i == 0 else {})})
        ev.append({"e": "o", "l": 0, "t": t + 0.006, "f": 0.005 if i else None})
    ev.append({"e": "end", "l": 0, "c": 0.006, "why": "epoch"})
    ev.append({"e": "it", "l": 1, "t": t, "workers": []})
    for i in range(eval_batches):
        ev.append({"e": "b", "l": 1, "i": i, "w": 0.001, "c": None if i == 0 else 0.001, "n": 8, "g": 0,
                   **({"s": 0.001} if i == 0 else {})})
    return ev


def test_the_loader_the_optimizer_follows_is_training_not_the_longest():
    ev = _events()
    by = stepstats.steps_by_loader(ev)
    assert len(by[1].steps) > len(by[0].steps)
    assert stepstats.train_loader(by, ev) == 0
    roles = stepstats.loader_roles(ev)
    assert stepstats.role_of(0, 0, roles)[0] == "train" and "optimizer steps" in stepstats.role_of(0, 0, roles)[1]
    role, why = stepstats.role_of(1, 0, roles)
    assert role == "eval" and "gradients disabled" in why


def test_without_optimizer_the_grad_enabled_loader_wins_then_the_longest():
    ev = [e for e in _events() if e["e"] != "o"]
    by = stepstats.steps_by_loader(ev)
    assert stepstats.train_loader(by, ev) == 0  # loader 1 was drawn under no_grad
    plain = [dict(e, g=1) if e["e"] == "b" else e for e in ev]
    assert stepstats.train_loader(by, plain) == 1  # nothing tells them apart: the most batches


def test_loop_boundary_is_the_wait_between_steps():
    ev = _events(train_batches=30)
    loop = stepstats.loop_boundaries(ev, 0, skip=2)
    assert loop["steps"] == 27
    assert loop["wait_fraction"] == pytest.approx(0.5, abs=0.01)  # 5 ms of each 10 ms period
    assert stepstats.loop_boundaries(ev, 1, skip=0) is None  # no optimizer step follows eval batches


class _Emit:
    def __init__(self):
        self.lines = []

    def __call__(self, line):
        self.lines.append(line)


def test_recorder_leaves_through_its_finish_hook_not_an_exception():
    left = []
    rec = Recorder(_Emit(), steps=1, warmup=0, clock=iter(range(1000)).__next__)
    rec.finish_hook = lambda: left.append(True)
    with pytest.raises(StopProbe):  # only because the fake hook returns; the runner's never does
        rec.finish("steps")
    assert left == [True] and '"e":"stop"' in rec.emit.lines[-1]


def test_only_training_batches_count_toward_the_stop():
    rec = Recorder(_Emit(), steps=100, warmup=0)
    assert rec._counts(0, grad=True) and not rec._counts(1, grad=False)  # before any optimizer step
    rec.last_site = 0
    rec.on_optimizer_step(1.0)
    assert rec._counts(0, grad=False) and not rec._counts(1, grad=True)
    rec.mode = "drain"
    assert rec._counts(1, grad=False)  # loaderdoctor's own drains count every batch


def test_loaders_built_at_one_place_are_told_apart_by_their_dataset():
    rec = Recorder(_Emit())
    a = rec.loader_key("train.py:40", "accelerate/data_loader.py:prepare_data_loader", "TensorDataset/800")
    b = rec.loader_key("train.py:40", "accelerate/data_loader.py:prepare_data_loader", "TensorDataset/200")
    again = rec.loader_key("train.py:40", "accelerate/data_loader.py:prepare_data_loader", "TensorDataset/800")
    assert a != b and a == again and b.endswith("#2")
    assert rec.loader_key("train.py:9", "", "D/1") == "train.py:9"


def _report(stages, rows=()):
    return {"stages": [{"name": n, "status": s, "detail": d, "seconds": 1.0} for n, s, d in stages],
            "start_methods": list(rows), "hangs": [], "crashes": [], "loaders": [], "baseline": {}}


def test_a_failed_experiment_is_probe_incomplete_and_never_best_measured():
    r = _report([("baseline", "ok", ""), ("workers-2", "crash", "RuntimeError: Please call iter(combined_loader) "
                                          "first"), ("workers-4", "ok", "")])
    found = rule_probe_incomplete(r)
    assert [f.id for f in found] == ["probe-incomplete"]
    assert "workers-2" in found[0].evidence and "2 workers" in found[0].evidence
    assert "Please call iter" in found[0].evidence
    assert not rule_probe_incomplete(_report([("baseline", "crash", "x"), ("workers-2", "crash", "y")]))


def _row(method, status, **kw):
    base = {"method": method, "stage": f"context-{method}", "status": status, "detail": kw.pop("detail", ""),
            "threads_at_start": [], "native_pools": [], "cuda_init": False, "pickle": None,
            "bootstrap_error": False, "missing_main_attr": None, "reruns": [], "worker_failed": False}
    base.update(kw)
    return base


def test_a_start_method_that_failed_for_our_reasons_is_not_evidence_against_the_script():
    rows = [_row("fork", "ok"), _row("spawn", "crash", detail="the runner ended without reporting (exit code 0)"),
            _row("forkserver", "ok")]
    r = _report([("baseline", "ok", ""), ("context-fork", "ok", ""),
                 ("context-spawn", "crash", "the runner ended without reporting (exit code 0)"),
                 ("context-forkserver", "ok", "")], rows)
    assert not rule_spawn_unsafe(r)
    assert [f.id for f in rule_probe_incomplete(r)] == ["probe-incomplete"]
    rows[0] = _row("fork", "crash", detail="RuntimeError: Please call iter(combined_loader) first")
    assert not rule_fork_unsafe(_report([], rows))


def test_workers_that_rerun_the_script_are_spawn_unsafe_with_the_frame():
    rerun = {"pid": 7, "what": "iterated a DataLoader", "frame": {"file": "/x/repro.py", "line": 12,
                                                                  "function": "<module>"}}
    rows = [_row("fork", "ok"), _row("spawn", "crash", reruns=[rerun]), _row("forkserver", "crash", reruns=[rerun])]
    found = rule_spawn_unsafe(_report([], rows))
    assert found and "re-run the script's training" in found[0].title and "repro.py:12" in found[0].evidence


def test_diagnose_runs_every_rule_on_an_incomplete_probe():
    r = _report([("baseline", "ok", ""), ("loader-only", "failed", "stage exceeded its time limit")])
    r["baseline"] = {"steps": 50, "data_wait_fraction": 0.5}
    verdict, findings, rec = diagnose(r)
    assert verdict == "data-bound" and "probe-incomplete" in [f["id"] for f in findings]


def test_other_processes_cpu_is_noise_and_impossible_figures_are_not_shown():
    from loaderdoctor.analysis import samples
    from loaderdoctor.analysis.report import sanity

    summary = {"system": [{"t": t, "cpu": 90.0} for t in (1.0, 2.0, 3.0)],
               "rows": [{"pid": 1, "role": "main", "t": t, "cpu": 50.0} for t in (0.5, 1.0, 2.0, 3.0)]}
    # 2 CPUs at 90% = 1.8 cores busy, the run took 0.5: 1.3 cores were someone else's
    assert samples.outside_load(summary, [0.5, 3.0], 2) == pytest.approx(1.3)
    r = {"environment": {"cpu_count_effective": 2}, "baseline": {"data_wait_fraction": 1.7},
         "workers_sweep": [{"num_workers": 4, "cpu_workers_pct": 6697.0, "cpu_main_pct": 90.0}],
         "transforms": [{"name": "Resize", "share": 0.4}]}
    problems = sanity(r)
    assert len(problems) == 2 and r["baseline"]["data_wait_fraction"] is None
    assert r["workers_sweep"][0]["cpu_workers_pct"] is None and r["workers_sweep"][0]["cpu_main_pct"] == 90.0
    assert r["transforms"][0]["share"] == 0.4


def test_noisy_machine_finding_names_the_stages():
    from loaderdoctor.analysis.rules.resources import rule_noisy_machine

    r = {"noise": [{"stage": "baseline", "outside_cores": 1.2, "noisy": True},
                   {"stage": "workers-2", "outside_cores": 0.1, "noisy": False}],
         "environment": {"cpu_count_effective": 2}}
    (f,) = rule_noisy_machine(r)
    assert f.id == "noisy-machine" and f.severity == "warning" and "baseline (1.2)" in f.evidence
    assert not rule_noisy_machine({"noise": [{"stage": "baseline", "outside_cores": 0.1, "noisy": False}]})


def test_loaders_zipped_together_each_feed_the_step_and_an_eval_pass_does_not():
    rec = Recorder(_Emit(), steps=100, warmup=0)
    rec.in_child = False

    def draw(site, n=1):
        for _ in range(n):
            rec.last_site = site
            rec.since_step[site] = rec.since_step.get(site, 0) + 1

    for _ in range(6):  # zip(labeled, unlabeled) with 2-step gradient accumulation: 2 of each per step
        draw(0, 2)
        draw(1, 2)
        rec.on_optimizer_step(1.0)
    draw(2, 3)  # an evaluation pass (its whole loader), then the training loaders again
    draw(0)
    draw(1)
    rec.on_optimizer_step(2.0)
    assert rec.site_opt == {0: 7, 1: 7}
    draw(2, 1)  # a one-batch evaluation pass: drawn as often as the training loaders, so credited once,
    draw(0)     # yet not training: its batches never count toward the measured steps
    draw(1)
    rec.on_optimizer_step(3.0)
    assert rec.site_opt[2] == 1 and not rec._counts(2, grad=True) and rec._counts(1, grad=True)
    assert '"ls":[0,1]' in rec.emit.lines[0]


def test_the_zipped_loader_the_step_waits_on_is_training_and_the_other_says_it_fed_the_steps():
    ev = [{"e": "it", "l": 0, "t": 0.0, "workers": []}, {"e": "it", "l": 1, "t": 0.0, "workers": []}]
    t = 0.0
    for i in range(10):
        t += 0.02
        ev.append({"e": "b", "l": 0, "i": i, "w": 0.001, "c": None if i == 0 else 0.01, "n": 8, "t": t})
        ev.append({"e": "b", "l": 1, "i": i, "w": 0.008, "c": None if i == 0 else 0.01, "n": 8, "t": t})
        ev.append({"e": "o", "l": 1, "t": t + 0.01, "f": None, "ls": [0, 1]})
    by = stepstats.steps_by_loader(ev)
    assert stepstats.train_loader(by, ev) == 1  # equal steps: loader 1 kept the step waiting longer
    ev_swapped = [dict(e, w=0.009) if e["e"] == "b" and e["l"] == 0 else e for e in ev]
    assert stepstats.train_loader(by, ev_swapped) == 0
    roles = stepstats.loader_roles(ev)
    assert roles[0]["optimizer_steps"] == roles[1]["optimizer_steps"] == 10
    role, why = stepstats.role_of(0, 1, roles)
    assert role == "other" and "consumed together with the training loader" in why and "10 of the same" in why


def test_the_baseline_in_the_confirms_first_pair_is_read_over_as_many_steps_as_a_confirm_run():
    """The baseline measured 50 steps, the confirm's runs 30: the first pair compares the
    baseline's first 30 (after its warm-up) with the run's, not a longer stretch."""
    from loaderdoctor.analysis import tables

    ev, t = [{"e": "it", "l": 0, "t": 0.0, "workers": []}], 0.0
    for i in range(60):  # slow for the first 34 batches, then fast
        w = 0.020 if i < 34 else 0.001
        t += w + 0.005
        ev.append({"e": "b", "l": 0, "i": i, "w": w, "c": None if i == 0 else 0.005, "n": 8, "t": t,
                   **({"s": 0.02, "g": 1} if i == 0 else {})})
        ev.append({"e": "o", "l": 0, "t": t, "f": 0.001 if i else None})
    ev.append({"e": "end", "l": 0, "c": 0.005, "why": "stop"})

    class _Session:
        def stage(self, name):
            return {"name": name, "status": "ok", "events": ev}

    whole = tables._run_rate(_Session(), "baseline", 3)
    first = tables._run_rate(_Session(), "baseline", 3, steps=30)
    assert first == pytest.approx(8 / 0.025, rel=0.02)  # only the slow stretch, as a 30-step run would see
    assert whole > 1.3 * first
    assert tables._run_rate(_Session(), "baseline", 3, steps=500) == whole  # a longer run: nothing to cut
