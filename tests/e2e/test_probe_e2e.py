"""The probe foundation, end to end: real scripts, real child processes, the real CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CLI_TIMEOUT, run_cli, script

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]


def _report(out_dir):
    with open(os.path.join(out_dir, "report.json")) as f:
        return json.load(f)


@pytest.mark.alone
def test_sleeping_getitem_is_data_bound(tmp_path):
    res = run_cli("probe", "--stages", "baseline", script("slow_getitem.py"), "--out", str(tmp_path), "--steps", "20", "-q")
    assert res.returncode == 0, res.stderr
    r = _report(tmp_path)
    assert r["schema_version"] == 1
    assert r["baseline"]["steps"] == 20
    assert r["baseline"]["data_wait_fraction"] >= 0.5  # 40 ms of sleep per step; a loaded machine slows the step
    assert r["verdict"] == "data-bound"
    assert "data-bound" in [f["id"] for f in r["findings"]]
    # 4 samples of 10 ms each: the median wait is at least 40 ms
    assert r["baseline"]["wait_s"]["median"] >= 0.04
    (loader,) = r["loaders"]
    assert loader["role"] == "train" and loader["num_workers"] == 0 and loader["batch_size"] == 4
    assert loader["dataset"].endswith("SlowDataset") and loader["dataset_len"] == 10_000
    assert os.path.exists(tmp_path / "report.md")


@pytest.mark.alone
def test_in_memory_wide_mlp_is_compute_bound(tmp_path):
    res = run_cli("probe", "--stages", "baseline", script("compute_bound.py"), "--out", str(tmp_path), "--steps", "20", "-q")
    assert res.returncode == 0, res.stderr
    r = _report(tmp_path)
    assert r["baseline"]["data_wait_fraction"] <= 0.2
    assert r["verdict"] in ("compute-bound", "balanced")


def test_spawn_workers_and_argv_behave_as_under_python(tmp_path):
    plain_out, probed_out = tmp_path / "plain.json", tmp_path / "probed.json"
    subprocess.run([sys.executable, script("spawn_identity.py"), str(plain_out), "--lr", "1e-3"], check=True,
                   timeout=CLI_TIMEOUT, cwd=tmp_path)
    res = run_cli("probe", "--stages", "baseline", script("spawn_identity.py"), "--out", str(tmp_path / "rep"), "-q", "--",
                  str(probed_out), "--lr", "1e-3", cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    plain, probed = json.loads(plain_out.read_text()), json.loads(probed_out.read_text())
    assert probed == plain
    assert plain["name"] == "__main__" and plain["argv"] == ["--lr", "1e-3"]
    assert plain["n_worker_pids"] == 2 and not plain["main_pid_in_workers"]
    r = _report(tmp_path / "rep")
    assert r["loaders"][0]["start_method"] == "spawn" and r["loaders"][0]["num_workers"] == 2
    assert r["target"]["argv"] == [str(probed_out), "--lr", "1e-3"]


def test_stops_a_loop_that_swallows_exceptions(tmp_path):
    res = run_cli("probe", "--stages", "baseline", script("swallows_exceptions.py"), "--out", str(tmp_path), "--steps", "10", "-q",
                  timeout=120)
    assert res.returncode == 0, res.stderr
    r = _report(tmp_path)
    assert r["baseline"]["steps"] == 10
    assert r["stages"][0]["detail"] == "stopped after the measured steps"


def test_training_loader_is_the_one_with_most_steps(tmp_path):
    res = run_cli("probe", "--stages", "baseline", script("two_loaders.py"), "--out", str(tmp_path), "--steps", "30", "-q")
    assert res.returncode == 0, res.stderr
    r = _report(tmp_path)
    train = next(l for l in r["loaders"] if l["role"] == "train")
    assert train["site"].endswith("two_loaders.py:14") and train["instances"] >= 2
    (val,) = [l for l in r["loaders"] if l["role"] == "other"]
    assert "two_loaders.py:9 < " in val["site"] and val["site"].endswith("two_loaders.py:12")
    # the train loader is rebuilt every epoch: one first batch (start-up) per epoch
    assert len(r["baseline"]["first_batch_s_all"]) >= 2


def test_sys_exit_after_training_is_a_normal_end(tmp_path):
    res = run_cli("probe", "--stages", "baseline", script("exits_after_training.py"), "--out", str(tmp_path), "-q")
    assert res.returncode == 0, res.stderr
    r = _report(tmp_path)
    assert r["stages"][0]["status"] == "ok"
    assert r["baseline"]["steps"] == 20 - 1 - 3  # 20 batches: first and 3 warm-up left out


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("make,needle", [
    (lambda d: str(d / "missing.py"), "no such file"),
    (lambda d: str(d), "is a directory"),
    (lambda d: _write(d / "notes.txt", "This is just text, not code."), "is not valid Python"),
    (lambda d: _write(d / "blob.py", "\0\1\2binary"), "not a Python script"),
    (lambda d: script("syntax_error.py"), "syntax error (line 3"),
])
def test_bad_target_is_a_usage_error(tmp_path, make, needle):
    res = run_cli("probe", make(tmp_path), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_script_raising_before_any_loader(tmp_path):
    res = run_cli("probe", script("raises_before_loader.py"), "--out", str(tmp_path))
    assert res.returncode == 2
    assert "raised KeyError: 'batch_size'" in res.stderr
    assert "raises_before_loader.py:5" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout  # theirs is in the stage's stderr.log
    assert "KeyError" in (tmp_path / "stages" / "baseline" / "stderr.log").read_text()
    assert (tmp_path / "report.json").exists()  # a partial report beats none


def test_script_without_a_dataloader(tmp_path):
    res = run_cli("probe", script("no_loader.py"), "--out", str(tmp_path))
    assert res.returncode == 2
    assert "no data pipeline to diagnose" in res.stderr


def test_sys_exit_before_any_loader(tmp_path):
    res = run_cli("probe", script("exits_early.py"), "--out", str(tmp_path))
    assert res.returncode == 2
    assert "sys.exit(2)" in res.stderr


def test_unknown_option_is_a_usage_error(tmp_path):
    res = run_cli("probe", script("slow_getitem.py"), "--no-such-option")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr


def _interrupt_after_first_batch(command, tmp_path, *args):
    """Start `loaderdoctor COMMAND forever.py`, send Ctrl-C (SIGINT) once the script has its
    first batch, and return (returncode, stderr, torch shared-memory files made meanwhile)."""
    shm_before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen([sys.executable, "-m", "loaderdoctor", command, script("forever.py"), "--out",
                             str(tmp_path), "--steps", "100000", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stdout_log = tmp_path / "stages" / ("baseline" if command == "probe" else "check") / "stdout.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # sync on the script's own output, not a sleep
        if stdout_log.exists() and "FIRST BATCH" in stdout_log.read_text():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        proc.communicate(timeout=30)
        pytest.fail("the script never produced its first batch")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    made = {f for f in set(os.listdir("/dev/shm")) - shm_before if f.startswith(("torch_", "sem.mp-", "psm_"))}
    return proc.returncode, err, made


@pytest.mark.alone
def test_ctrl_c_ends_everything_and_keeps_a_partial_report(tmp_path):
    code, err, shm_left = _interrupt_after_first_batch("probe", tmp_path)
    assert code == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    assert not shm_left, f"left in /dev/shm: {sorted(shm_left)}"
    r = _report(tmp_path)
    assert r["interrupted"] is True
    assert r["stages"][0]["status"] == "failed" and "interrupted" in r["stages"][0]["detail"]


@pytest.mark.alone
def test_ctrl_c_on_check_ends_everything(tmp_path):
    code, err, shm_left = _interrupt_after_first_batch("check", tmp_path, "--timeout", "30")
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not shm_left, f"left in /dev/shm: {sorted(shm_left)}"


@pytest.mark.alone
def test_demo_runs_without_a_target(tmp_path):
    # the full default plan on the demo, with one confirm pair (its five: benchmarks/time_to_verdict.py)
    res = run_cli("probe", "--out", str(tmp_path), "--steps", "20", "--repeats", "1")
    assert res.returncode == 0, res.stderr
    r = _report(tmp_path)
    assert r["target"]["kind"] == "demo"
    assert r["baseline"]["steps"] == 20
    assert r["verdict"] == "data-bound"  # num_workers=0 and a Python blur: the demo waits on data
    assert "Wrote" in res.stdout
