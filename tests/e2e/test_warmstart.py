"""Warm starts: the stages after the baseline fork from one process that imported torch
(orchestrate/warmstart.py), and only where the baseline shows that equals a cold start;
the runner imports nothing of torch before the script does (child/torchhook.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CLI_TIMEOUT, run_processes_left, script

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]


def _probe(tmp_path, name, *args):
    res = subprocess.run([sys.executable, "-m", "loaderdoctor", "probe", script(name), "--out", str(tmp_path),
                          "-q", *args], capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert res.returncode in (0, 1), res.stderr
    return json.loads((tmp_path / "session.json").read_text())


def _hello(stage):
    return next(e for e in stage["events"] if e.get("e") == "hello")


def _stdout(tmp_path, stage):
    return (tmp_path / "stages" / stage / "stdout.log").read_text()


def test_the_stages_after_the_baseline_fork_warm_under_every_start_method(tmp_path):
    s = _probe(tmp_path, "optimizer_workers.py", "--stages", "baseline,loader-only,workers,context",
               "--start-methods", "fork,spawn,forkserver", "--max-workers", "1", "--steps", "10")
    stages = {st["name"]: st for st in s["stages"]}
    assert {"baseline", "loader-only", "workers-0", "workers-1", "context-fork", "context-spawn",
            "context-forkserver"} <= set(stages), sorted(stages)
    assert all(st["status"] == "ok" for st in stages.values()), {n: st["detail"] for n, st in stages.items()}
    notes = s["notes"]["warm_start"]
    assert notes["used"] is True and notes["why"] is None
    base = stages.pop("baseline")
    # Adam's first use imported torch._dynamo, nothing changed before; the installed packages
    # imported by then (sympy, by torch._dynamo) come between, in the script's order
    pk = next(e for e in base["events"] if e.get("e") == "packages")
    assert notes["preloaded"] == ["torch", *pk["names"], "torch._dynamo"], (notes, pk)
    assert base["warm"] is False and _hello(base)["preloaded"] is False and _hello(base)["torch_import_s"] > 0.1
    assert _hello(base)["before_torch"] == {"env": [], "extensions": []}
    for name, st in stages.items():
        assert st["warm"] is True, name
        hello = _hello(st)
        assert hello["preloaded"] is True and hello["torch_import_s"] == 0.0, name
        assert hello["pid"] != base["events"][0]["pid"]
        dyn = [e for e in st["events"] if e.get("e") == "import"]
        assert [(e["m"], e["before"]) for e in dyn] == [("torch._dynamo", None)], name
        assert _stdout(tmp_path, name).startswith("threads "), name  # the script's own output reached its log
    r = json.loads((tmp_path / "report.json").read_text())
    said = {st["name"]: st["detail"] for st in r["stages"]}
    assert "started warm" not in said["baseline"] and "started warm" in said["loader-only"]
    # every worker of every start method reported its fetches (spawned workers came from a warm runner too)
    for method in ("fork", "spawn", "forkserver"):
        assert any(e.get("e") == "wf" for e in stages[f"context-{method}"]["events"]), method


def test_a_script_that_sets_threads_before_torch_keeps_them_in_every_stage(tmp_path):
    s = _probe(tmp_path, "threads_before_torch.py", "--stages", "baseline,loader-only,workers", "--max-workers", "1",
               "--steps", "10")
    assert all(st["status"] == "ok" for st in s["stages"]), [(st["name"], st["detail"]) for st in s["stages"]]
    # the OpenMP runtime read the script's own setting: the runner did not load torch first, and
    # the warm process imported torch under the variable the script had set by then
    for st in s["stages"]:
        assert _stdout(tmp_path, st["name"]).split()[:2] == ["threads", "1"], st["name"]
    base = s["stages"][0]
    assert _hello(base)["before_torch"]["env"] == ["LD_TEST_SERVICE_TOKEN", "OMP_NUM_THREADS"]
    notes = s["notes"]["warm_start"]
    assert notes["used"] is True and notes["env_set_first"] == ["LD_TEST_SERVICE_TOKEN", "OMP_NUM_THREADS"]
    assert [st["warm"] for st in s["stages"]] == [False] + [True] * (len(s["stages"]) - 1)
    # the value went to the warm process through memory only: not in any event or file
    assert all(e.get("e") != "env" for st in s["stages"] for e in st["events"])
    assert "values" not in json.dumps(_hello(base))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"tok-8c1f-never-written" not in path.read_bytes(), path


def test_cold_starts_on_request(tmp_path):
    s = _probe(tmp_path, "optimizer_workers.py", "--stages", "baseline,loader-only", "--steps", "10", "--cold-starts")
    assert [st["warm"] for st in s["stages"]] == [False, False]
    assert s["notes"]["warm_start"] == {"used": False, "why": "turned off (--cold-starts)"}
    assert _hello(s["stages"][1])["torch_import_s"] > 0.1


def test_a_detached_process_of_a_warm_stage_is_ended_with_it(tmp_path):
    """Forked from the warm process, the stage's processes carry no run id in their environment;
    the warm process adopts the orphan (a subreaper) and the stage's end finds it there."""
    s = _probe(tmp_path, "detached_sleeper.py", "--stages", "baseline,loader-only", "--steps", "10")
    assert [st["warm"] for st in s["stages"]] == [False, True]
    assert all(st["status"] == "ok" and not st["survivors"] for st in s["stages"])
    assert not run_processes_left()


def test_an_extension_loaded_before_torch_is_loaded_first_in_the_warm_process_too(tmp_path):
    """`from PIL import Image` before `import torch`: the warm process imports Pillow's native
    module before torch, as the script did, so the stages after the baseline still start warm."""
    s = _probe(tmp_path, "extension_before_torch.py", "--stages", "baseline,loader-only", "--steps", "10")
    assert all(st["status"] == "ok" for st in s["stages"]), [(st["name"], st["detail"]) for st in s["stages"]]
    assert "PIL._imaging" in _hello(s["stages"][0])["before_torch"]["extensions"]
    assert s["notes"]["warm_start"]["used"] is True, s["notes"]["warm_start"]
    assert [st["warm"] for st in s["stages"]] == [False, True]
    assert _stdout(tmp_path, "loader-only").startswith("pillow PIL.Image")


def test_installed_packages_the_script_imports_are_imported_ahead_under_its_environment(tmp_path):
    """An installed package imported after torch (after the script set a variable it reads at
    import) is imported once in the warm process, under that variable; the script's own module
    is not (the list ends there), and each stage imports it itself."""
    import os

    site = script(os.path.join("warm_site", "site-packages"))
    env = {**os.environ, "PYTHONPATH": site + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", "loaderdoctor", "probe", script(os.path.join("warm_site", "packages_after_torch.py")),
                          "--out", str(tmp_path), "-q", "--stages", "baseline,loader-only,workers", "--max-workers", "1",
                          "--steps", "10"], capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env)
    assert res.returncode in (0, 1), res.stderr
    s = json.loads((tmp_path / "session.json").read_text())
    assert all(st["status"] == "ok" for st in s["stages"]), [(st["name"], st["detail"]) for st in s["stages"]]
    notes = s["notes"]["warm_start"]
    assert notes["used"] is True and notes["preloaded"][:2] == ["torch", "ldwarmpkg"], notes
    assert "ldwarmlocal" not in notes["preloaded"] and "LD_WARM_FLAG" in notes["env_set_first"]
    pk = next(e for e in s["stages"][0]["events"] if e.get("e") == "packages")
    assert pk["names"] == ["ldwarmpkg"] and "ldwarmlocal" in pk["stopped"]
    assert _stdout(tmp_path, "baseline").startswith("pkg set-by-script here local here set pkg-set-by-script")
    # the variable the package set when imported is set in each warm stage too (its import there is a no-op)
    # (torch._dynamo's import sets TORCHINDUCTOR_CACHE_DIR unless the environment has it, cold too)
    assert set(notes["env_set_by_imports"]) - {"TORCHINDUCTOR_CACHE_DIR"} == {"LD_WARM_SET_BY_PKG"}, notes
    for st in s["stages"][1:]:
        assert st["warm"] is True, st["name"]
        out = _stdout(tmp_path, st["name"])
        assert out.startswith("pkg set-by-script ahead local here set pkg-set-by-script"), (st["name"], out)
    assert "set-by-script" not in (tmp_path / "session.json").read_text()  # the value is never written


def test_a_stage_that_hangs_only_when_forked_warm_is_run_again_cold(tmp_path):
    """The baseline (cold) runs fine; loader-only, forked warm, hangs in the dataset. It is run
    again as a fresh interpreter, whose result counts; later stages start cold; the warm
    attempt's stacks stay beside it; nothing is left running."""
    s = _probe(tmp_path, "hangs_when_forked_warm.py", "--stages", "baseline,loader-only,workers",
               "--max-workers", "1", "--steps", "10", "--timeout", "3", "--first-batch-timeout", "3")
    stages = {st["name"]: st for st in s["stages"]}
    assert stages["baseline"]["status"] == "ok" and stages["baseline"]["warm"] is False
    lo = stages["loader-only"]
    assert lo["status"] == "ok" and lo["warm"] is False, (lo["status"], lo["detail"])
    assert "re-run cold: forked from the warm process it hung" in lo["detail"], lo["detail"]
    note = s["notes"]["warm_start"]["cold_rerun"]
    assert note["stage"] == "loader-only" and note["warm_status"] == "hang" and note["cold_status"] == "ok"
    assert list((tmp_path / "stages" / "loader-only-warm" / "stacks").glob("*")), "the warm attempt's stacks"
    later = [st for n, st in stages.items() if n.startswith("workers-")]
    assert later and all(st["status"] == "ok" and st["warm"] is False for st in later), later
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["verdict"] != "hang" and "hang" not in {f["id"] for f in r["findings"]}
    assert not run_processes_left()
