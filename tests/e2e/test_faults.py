"""Fault injection: any text a user's code produces, any path, any secret, loaderdoctor's own
interruption. Each case asserts the exit code, the one-paragraph message (never our
traceback) and, through the autouse fixture, that no process survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import run_cli, script

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]


def fault(name):
    return script(os.path.join("faults", name))


def _no_traceback(res):
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-2000:]


def _script_text(folder) -> str:
    """What the stages kept of the script's own output (logs, stack dumps): the user's bytes,
    escapes and all, so read leniently."""
    out = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.endswith((".log", ".txt")):
                with open(os.path.join(dirpath, f), encoding="utf-8", errors="replace") as fh:
                    out.append(fh.read())
    return "\n".join(out)


def _all_text(folder) -> str:
    out = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.endswith((".json", ".md", ".html", ".xml", ".patch", ".csv")):
                with open(os.path.join(dirpath, f), encoding="utf-8", errors="strict") as fh:
                    out.append(fh.read())
    return "\n".join(out)


def test_undecodable_and_hostile_text_from_a_worker(tmp_path):
    """A surrogate escape, ANSI colours, an OSC title and a NUL in a worker's exception: the
    report is written whole, re-renders, and check gives 4, valid JUnit and a step summary."""
    out = tmp_path / "probe"
    res = run_cli("probe", fault("surrogate_worker.py"), "--out", str(out), "--stages", "baseline", "-q")
    assert res.returncode == 0, res.stderr
    _no_traceback(res)
    text = _all_text(out)  # every file is valid UTF-8 (errors="strict" above)
    assert "\x1b" not in text and "\x00" not in text and "\x07" not in text
    assert "<script>alert(1)</script>" not in (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "cannot decode" in md and md.rstrip().endswith("is a hang.")  # not cut short: the last section is there
    again = run_cli("report", str(out / "report.json"), "--format", "md", "--out", str(tmp_path / "again.md"))
    assert again.returncode == 0, again.stderr
    summary = tmp_path / "summary.md"
    res = run_cli("check", fault("surrogate_worker.py"), "--timeout", "30", "--out", str(tmp_path / "check"),
                  "--junit-xml", str(tmp_path / "junit.xml"), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.returncode == 4, res.stderr
    _no_traceback(res)
    assert "\x1b" not in res.stderr and "\x1b" not in res.stdout  # no raw escape reaches the terminal
    ET.parse(tmp_path / "junit.xml")  # parses
    assert "CRASH" in summary.read_text() and "<script>" not in summary.read_text()
    f = next(f for f in json.loads((out / "report.json").read_text())["findings"] if f["id"] == "worker-crash")
    assert "pid None" not in f["evidence"]


def test_a_script_that_changes_directory_keeps_its_worker_stacks(tmp_path, monkeypatch):
    """A relative --out and a script that chdirs: the workers' stack files still land in the run
    folder, and the culprit is the worker's __getitem__, not "the loop itself"."""
    monkeypatch.chdir(tmp_path)
    res = run_cli("probe", fault("chdir_hang.py"), "--out", "rel-out", "--stages", "baseline", "--timeout", "4",
                  "-q", cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "rel-out" / "report.json").read_text())
    (h,) = r["hangs"]
    assert h["culprit"]["role"] == "worker" and h["culprit"]["function"].endswith("__getitem__"), h["culprit"]


def test_secrets_in_the_arguments_are_never_written(tmp_path):
    secrets = ("sk-live-123456", "wb-abcdef9876", "/secret/home/dir")
    res = run_cli("probe", fault("secret_args.py"), "--out", str(tmp_path), "--stages", "baseline", "-q",
                  "--redact", "hf-home", "--", "--api-key", secrets[0], f"--wandb-token={secrets[1]}",
                  "--hf-home", secrets[2])
    assert res.returncode == 0, res.stderr
    text = _all_text(tmp_path)
    logs = _script_text(tmp_path)
    for s in secrets:
        assert s not in text and s not in logs, s
    assert "***" in text
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["target"]["argv"] == ["--api-key", "***", "--wandb-token=***", "--hf-home", "***"]
    assert "upload refused for key ***" in json.dumps(r)  # the script really got the value, and it was masked
    log = (tmp_path / "stages" / "baseline" / "stdout.log").read_text()
    assert "token *** to https://user:***@hub.example" in log  # what the script printed, masked in its log


def _readonly_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    return d


@pytest.mark.parametrize("case", ["out-is-a-file", "out-read-only", "junit-missing-folder", "report-out-read-only"])
def test_bad_output_paths_are_usage_errors_before_anything_runs(tmp_path, case):
    target = script("slow_getitem.py")
    try:
        if case == "out-is-a-file":
            (tmp_path / "f").write_text("x")
            res = run_cli("probe", target, "--out", str(tmp_path / "f"), "--stages", "baseline")
        elif case == "out-read-only":
            ro = _readonly_dir(tmp_path)
            res = run_cli("probe", target, "--out", str(ro / "new"), "--stages", "baseline")
        elif case == "junit-missing-folder":
            res = run_cli("check", target, "--timeout", "10", "--out", str(tmp_path / "c"),
                          "--junit-xml", str(tmp_path / "missing" / "j.xml"))
        else:
            ro = _readonly_dir(tmp_path)
            (tmp_path / "r.json").write_text(json.dumps({"schema_version": 1}))
            res = run_cli("report", str(tmp_path / "r.json"), "--out", str(ro / "r.md"), "--format", "md")
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "ro")], capture_output=True)
    assert res.returncode == 2, (res.returncode, res.stderr)
    _no_traceback(res)
    assert res.stderr.strip().startswith("loaderdoctor:")
    assert not (tmp_path / "c" / "stages").exists()  # nothing ran


def test_a_handler_that_swallows_every_exception_cannot_keep_a_stage_alive(tmp_path):
    res = run_cli("probe", fault("swallow_base.py"), "--out", str(tmp_path), "--stages", "baseline,loader-only",
                  "--steps", "20", "-q")
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    assert [s["status"] for s in r["stages"]] == ["ok", "ok"], r["stages"]
    for s in r["stages"]:
        assert s["seconds"] < 60
        assert "done" not in (tmp_path / "stages" / s["name"] / "stdout.log").read_text()


def test_a_script_that_never_builds_a_loader_and_runs_on_is_exit_2_after_the_baseline(tmp_path):
    res = run_cli("probe", fault("no_loader_forever.py"), "--out", str(tmp_path), "--timeout", "3", "-q")
    assert res.returncode == 2, res.stderr
    _no_traceback(res)
    assert "without building a torch DataLoader" in res.stderr
    assert sorted(os.listdir(tmp_path / "stages")) == ["baseline"]


def test_a_chatty_script_log_is_kept_to_its_head_and_tail(tmp_path):
    res = run_cli("probe", fault("noisy_stdout.py"), "--out", str(tmp_path), "--stages", "baseline", "-q")
    assert res.returncode == 0, res.stderr
    log = tmp_path / "stages" / "baseline" / "stdout.log"
    assert log.stat().st_size < 2_200_000
    assert "bytes cut here" in log.read_text(errors="replace")


def test_ctrl_c_twice_still_keeps_what_was_measured(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "loaderdoctor", "probe", script("forever.py"), "--out",
                             str(tmp_path), "--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    log = tmp_path / "stages" / "baseline" / "stdout.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.exists() and "FIRST BATCH" in log.read_text()):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "nothing was measured" not in err and "Traceback" not in err
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["interrupted"] is True and r["stages"][0]["name"] == "baseline"
