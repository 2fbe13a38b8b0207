"""Real frameworks, unmodified scripts, every stage: Lightning (`lightning` and
`pytorch_lightning`), Accelerate, the Hugging Face Trainer, timm, MONAI, torchvision,
albumentations, and the loop forms real scripts use (next(), infinite epochs, loops that catch
Exception, KeyboardInterrupt or BaseException, no main guard, train and eval loaders from one
helper). Each probe must complete every stage it runs, measure the confirm, name the loader
the optimizer is fed from as the training loader, and never let the script's code after the
measured steps run (its closing "done" line never appears in a stopped stage's output)."""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import run_cli, script

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]

TV_PYTHON = os.environ.get("LOADERDOCTOR_TV_PYTHON")
ALL = "baseline,loader-only,workers,transforms,context,confirm"
# The loader the optimizer is fed from, as the line that builds it (the report's site names it).
FULL = {
    "lightning_boring.py": "lightning",
    "pl_datamodule.py": "pytorch_lightning",
    "accelerate_loop.py": "accelerate",
    "hf_trainer.py": "transformers",
    "monai_dict.py": "monai",
}
# Loop forms and the remaining libraries: the baseline and a take-over stage (loader-only) are
# the two ways a stage ends; every stage after them ends one of those two ways.
QUICK = ["lightning_combined.py", "monai_thread_array.py", "albumentations_pipe.py", "loop_next.py",
         "loop_infinite.py", "loop_except_exception.py", "loop_baseexception.py", "loop_keyboardinterrupt.py",
         "loop_train_eval_sites.py"]


def _probe(tmp_path, name, stages, python=None, extra=()):
    out = tmp_path / "out"
    args = ["probe", script(os.path.join("frameworks", name)), "--out", str(out), "--timeout", "30",
            "--max-workers", "1", "--steps", "10", "--repeats", "1", "--budget", "420", "--stages", stages, "--quiet",
            *extra]
    if python:
        import subprocess

        r = subprocess.run([python, "-m", "loaderdoctor", *args], capture_output=True, text=True, timeout=600)
    else:
        r = run_cli(*args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "report.json") as f:
        return json.load(f), out


def _check(report, out, name):
    stages = report["stages"]
    ran = [s for s in stages if s["status"] != "skipped"]
    assert ran, stages
    bad = [(s["name"], s["status"], s["detail"]) for s in ran if s["status"] != "ok"]
    assert not bad, f"{name}: stages that did not complete: {bad}"
    assert "probe-incomplete" not in [f["id"] for f in report["findings"]]
    for s in ran:  # no code after the measured steps ran: the script's closing line never printed
        if s["detail"].startswith("stopped"):
            log = (out / "stages" / s["name"] / "stdout.log").read_text(errors="replace")
            assert not re.search(r"\bdone\b", log), f"{name}/{s['name']} ran the script's ending:\n{log[-500:]}"
    train = [l for l in report["loaders"] if l["role"] == "train"]
    assert len(train) == 1, report["loaders"]
    assert "optimizer steps" in train[0]["evidence"], train[0]
    return train[0]


def _confirm_measured(report):
    conf = next((s for s in report["stages"] if s["name"] == "confirm"), None)
    assert conf is not None
    if conf["status"] == "skipped":  # nothing beat the current settings: say so, never "best" after a failure
        assert "no measured setting beat" in conf["detail"] and "failed" not in conf["detail"], conf
    else:
        assert conf["status"] == "ok" and report["confirm"]["speedup"] is not None, report["confirm"]


# forkserver re-imports the script as spawn does (child/mpmain.py), in a server process of its
# own: tried on two frameworks; the others try fork and spawn (--start-methods), a third of the
# context stage's time (a forkserver run of the MONAI script is ~18 s here).
FORKSERVER_TOO = {"lightning_boring.py", "accelerate_loop.py"}


@pytest.mark.parametrize("name", sorted(FULL))
def test_framework_script_every_stage(tmp_path, name):
    pytest.importorskip(FULL[name])
    methods = ("fork", "spawn", "forkserver") if name in FORKSERVER_TOO else ("fork", "spawn")
    report, out = _probe(tmp_path, name, ALL, extra=("--start-methods", ",".join(methods)))
    names = [s["name"] for s in report["stages"] if s["status"] == "ok"]
    for stage in ("baseline", "loader-only", "transforms", *(f"context-{m}" for m in methods)):
        assert stage in names, (stage, report["stages"])
    assert ("context-forkserver" in [s["name"] for s in report["stages"]]) == ("forkserver" in methods)
    assert any(n.startswith("workers-") for n in names)
    _check(report, out, name)
    _confirm_measured(report)
    if name in ("accelerate_loop.py", "lightning_boring.py"):
        # the evaluation loader is a loader of its own (built at the same line or by the same
        # framework call, told apart by its dataset and the functions that built it), never training
        train = [l for l in report["loaders"] if l["role"] == "train"][0]
        others = [l for l in report["loaders"] if l["index"] != train["index"] and l["dataset_len"] != train["dataset_len"]]
        assert others, report["loaders"]
        assert all(l["site"] != train["site"] for l in others)


@pytest.mark.parametrize("name", QUICK)
def test_loop_forms_and_more_libraries(tmp_path, name):
    lib = {"lightning_combined.py": "lightning", "monai_thread_array.py": "monai",
           "albumentations_pipe.py": "albumentations"}.get(name)
    if lib:
        pytest.importorskip(lib)
    report, out = _probe(tmp_path, name, "baseline,loader-only")
    _check(report, out, name)
    if name == "loop_train_eval_sites.py":  # one helper builds both: told apart, the eval loader is not training
        train = next(l for l in report["loaders"] if l["role"] == "train")
        assert train["dataset_len"] == 400 and len(report["loaders"]) == 2, report["loaders"]


def test_unguarded_script_under_spawn_is_named_not_run(tmp_path):
    """No __main__ guard: under spawn/forkserver the workers re-import the script and would
    train again; loaderdoctor ends them at the first sign and says spawn-unsafe, with the line."""
    report, out = _probe(tmp_path, "loop_no_guard.py", "baseline,context")
    rows = {m["method"]: m for m in report["start_methods"]}
    assert rows["fork"]["status"] == "ok"
    for method in ("spawn", "forkserver"):
        assert rows[method]["status"] != "ok", rows[method]
    f = next(f for f in report["findings"] if f["id"] == "spawn-unsafe")
    assert "loop_no_guard.py:" in f["evidence"] and "re-run" in f["title"]
    for method in ("spawn", "forkserver"):
        log = (out / "stages" / f"context-{method}" / "stdout.log").read_text(errors="replace")
        assert "done" not in log  # no worker ran the training to its end


@pytest.mark.skipif(not TV_PYTHON, reason="needs the torch 2.14.1 + torchvision environment (LOADERDOCTOR_TV_PYTHON)")
@pytest.mark.parametrize("name,stages", [("timm_train.py", ALL), ("torchvision_v2.py", "baseline,loader-only")])
def test_torchvision_family(tmp_path, name, stages):
    report, out = _probe(tmp_path, name, stages, python=TV_PYTHON, extra=("--start-methods", "fork,spawn"))
    _check(report, out, name)
    if stages == ALL:
        _confirm_measured(report)
    if name == "timm_train.py":  # the KeyboardInterrupt handler and its evaluation never ran
        assert report["baseline"]["wait_method"] == "loop boundary"
