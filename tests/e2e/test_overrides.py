"""The runner can rebuild the training loader with other arguments (used by later stages)."""
import pytest

from conftest import script
from loaderdoctor.analysis.stepstats import loaders_from_events
from loaderdoctor.orchestrate.supervise import StageSpec, run_stage

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]


def test_override_num_workers_and_context_at_one_site(tmp_path):
    spec = StageSpec("ovr", script("two_loaders.py"), steps=10, timeout=30,
                     overrides={"num_workers": 2, "persistent_workers": True, "multiprocessing_context": "fork"})
    base = run_stage(StageSpec("plain", script("two_loaders.py"), steps=10, timeout=30), str(tmp_path))
    assert base.status == "ok", base.detail
    train_site = next(l["site"] for l in loaders_from_events(base.events) if l["site"].endswith(":14"))
    spec.override_site = train_site
    res = run_stage(spec, str(tmp_path))
    assert res.status == "ok", (res.detail, res.stderr_tail)
    loaders = {l["site"]: l for l in loaders_from_events(res.events)}
    train = loaders[train_site]
    assert train["num_workers"] == 2 and train["persistent_workers"] and train["start_method"] == "fork"
    assert train["overridden"] == {"num_workers": 0, "persistent_workers": False, "multiprocessing_context": None}
    others = [l for s, l in loaders.items() if s != train_site]
    assert others and all(l["num_workers"] == 0 and l["overridden"] is None for l in others)
    worker_events = [e for e in res.events if e.get("e") == "it" and e.get("workers")]
    assert worker_events and len(worker_events[0]["workers"]) == 2


def test_override_to_zero_workers_keeps_arguments_valid(tmp_path):
    res = run_stage(StageSpec("zero", script("spawn_identity.py"), argv=[str(tmp_path / "o.json")], steps=5,
                              timeout=30, overrides={"num_workers": 0}), str(tmp_path))
    assert res.status == "ok", (res.detail, res.stderr_tail)
    (loader,) = loaders_from_events(res.events)
    assert loader["num_workers"] == 0 and loader["start_method"] is None
