"""`loaderdoctor attach PID` on real training processes started as plain `python script.py`.

Each target appends its step count to a progress file; tests sync on that file (bounded
waits), never on sleeps alone. Every target is started in a session of its own and its whole
process group is killed in a finally block."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import run_cli  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "attach")
ATTACH_TIMEOUT = 60   # bound on one `loaderdoctor attach` run
READY_TIMEOUT = 45    # bound on a target reaching its first steps (torch import on a busy machine)
DURATION = "3"


def script(name: str) -> str:
    return os.path.join(SCRIPTS, name)


def line_of(name: str, marker: str) -> int:
    with open(script(name), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if marker in line:
                return n
    raise AssertionError(f"{marker} not in {name}")


def steps(progress: str) -> int:
    try:
        with open(progress, encoding="utf-8") as f:
            lines = f.read().split()
        return int(lines[-1]) if lines else 0
    except (OSError, ValueError):
        return 0


def wait_steps(progress: str, n: int, timeout: float, proc: subprocess.Popen | None = None) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = steps(progress)
        if got >= n:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the target exited with {proc.returncode} after {got} steps")
        time.sleep(0.1)
    raise AssertionError(f"{progress}: fewer than {n} steps within {timeout} s (got {steps(progress)})")


@contextlib.contextmanager
def target(name: str, tmp_path, ready_steps: int = 3, settle: float = 0.0):
    progress = str(tmp_path / f"{name}.steps")
    proc = subprocess.Popen([sys.executable, script(name), progress], cwd=SCRIPTS, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ATTACH_TARGET_LIFETIME": "120"})
    try:
        wait_steps(progress, ready_steps, READY_TIMEOUT, proc)
        if settle:
            time.sleep(settle)  # a frozen target: let its workers reach the blocking call
        yield proc, progress
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for k in kids:
        with contextlib.suppress(psutil.Error):
            k.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    psutil.wait_procs(kids, timeout=10)


def attach(pid: int, out, *args: str):
    res = run_cli("attach", str(pid), "--out", str(out), *args, timeout=ATTACH_TIMEOUT)
    report = None
    path = os.path.join(str(out), "report.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    return res, report


def assert_alive_not_stopped(proc: subprocess.Popen) -> list[psutil.Process]:
    assert proc.poll() is None, "attach must never end the job"
    procs = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    for p in procs:
        assert p.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE), \
            (p.pid, p.status())
    return procs


def assert_still_progressing(proc, progress: str) -> None:
    assert_alive_not_stopped(proc)
    before = steps(progress)
    wait_steps(progress, before + 3, 20, proc)


def assert_no_traceback(res) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr


# ---------------------------------------------------------------- frozen targets


@pytest.fixture(scope="module")
def deadlocked(tmp_path_factory):
    """One worker-deadlock target shared by the report test and the --timeout test."""
    with target("worker_deadlock.py", tmp_path_factory.mktemp("deadlock"), ready_steps=4, settle=1.0) as t:
        yield t


def test_worker_deadlock_report(deadlocked, tmp_path):
    proc, progress = deadlocked
    kids = {p.pid for p in psutil.Process(proc.pid).children()}
    res, r = attach(proc.pid, tmp_path / "out", "--duration", DURATION)
    assert res.returncode == 0, res.stderr  # without --timeout a written report exits 0
    assert_no_traceback(res)
    assert r["mode"] == "attach" and r["schema_version"] == 1
    assert r["target"]["kind"] == "process" and r["target"]["path"] == script("worker_deadlock.py")
    assert r["verdict"] == "hang"
    assert r["loaders"][0]["num_workers"] == 2
    h = r["hangs"][0]
    assert h["method"] == "py-spy" and h["stage"] == "attach"
    c = h["culprit"]
    assert c["role"] == "worker" and c["pid"] in kids
    assert c["file"] == script("worker_deadlock.py") and c["line"] == line_of("worker_deadlock.py", "DEADLOCK LINE")
    ow = h["owing_worker"]
    assert ow and ow["pid"] == c["pid"] and ow["worker_id"] == 0, ow
    assert {p["role"] for p in h["processes"]} >= {"main", "worker"}
    assert h["waiting"]["kind"] == "batch"
    assert [f["id"] for f in r["findings"]] == ["hang"]
    assert r["recommendation"]["status"] == "not-measured"
    for name in ("report.html", "report.md", "session.json"):
        assert os.path.exists(tmp_path / "out" / name)
    assert "worker_deadlock.py:" in (tmp_path / "out" / "report.md").read_text()
    assert f"worker_deadlock.py:{c['line']}" in res.stdout
    assert_alive_not_stopped(proc)
    assert steps(progress) == 4  # still frozen, untouched


def test_timeout_on_frozen_job_exits_3(deadlocked, tmp_path):
    proc, _ = deadlocked
    res, r = attach(proc.pid, tmp_path / "out", "--timeout", "2")
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert_no_traceback(res)
    assert r["verdict"] == "hang" and r["options"]["timeout"] == 2
    assert f"worker_deadlock.py:{line_of('worker_deadlock.py', 'DEADLOCK LINE')}" in res.stderr
    assert_alive_not_stopped(proc)


def test_hang_in_the_step(tmp_path):
    with target("hang_in_step.py", tmp_path, ready_steps=5, settle=0.5) as (proc, progress):
        res, r = attach(proc.pid, tmp_path / "out", "--duration", DURATION)
        assert res.returncode == 0, res.stderr
        assert r["verdict"] == "hang"
        h = r["hangs"][0]
        c = h["culprit"]
        assert c["role"] == "main" and c["pid"] == proc.pid
        assert c["file"] == script("hang_in_step.py") and c["line"] == line_of("hang_in_step.py", "STEP HANG LINE")
        assert h["owing_worker"] is None
        assert h["waiting"]["kind"] in ("call", "lock"), h["waiting"]
        assert "not in the data pipeline" in r["findings"][0]["fix"]
        assert_alive_not_stopped(proc)
        assert steps(progress) == 5


# ---------------------------------------------------------------- healthy targets


@pytest.mark.alone
def test_data_bound(tmp_path):
    with target("data_bound.py", tmp_path) as (proc, progress):
        res, r = attach(proc.pid, tmp_path / "out", "--duration", DURATION)
        assert res.returncode == 0, res.stderr
        assert_no_traceback(res)
        assert r["verdict"] == "data-bound", r["baseline"]
        b = r["baseline"]
        assert b["data_wait_fraction"] >= 0.5
        lo, hi = b["data_wait_ci"]
        assert lo <= b["data_wait_fraction"] <= hi and b["stack_samples"] >= 30
        assert "data-bound" in [f["id"] for f in r["findings"]] and not r["hangs"]
        top = r["attach"]["mains"][0]["busiest_worker_frames"][0]
        assert top["file"] == script("data_bound.py") and top["line"] == line_of("data_bound.py", "SLOW READ LINE")
        ws = r["attach"]["mains"][0]["workers"]
        assert len(ws) == 2 and all(w["progressed"] for w in ws)
        assert all(w["rss_mb"] and w["cpu_pct"] is not None for w in ws)
        nxt = r["attach"]["next_command"]
        assert nxt.startswith(f"loaderdoctor probe {script('data_bound.py')} --stages baseline,") and " -- " in nxt
        s = r["attach"]["sampler"]
        assert s["samples_per_s"] >= 10 and s["pyspy_cpu_pct_of_core"] is not None
        assert_still_progressing(proc, progress)


@pytest.mark.alone
def test_compute_bound(tmp_path):
    with target("compute_bound.py", tmp_path) as (proc, progress):
        res, r = attach(proc.pid, tmp_path / "out", "--duration", DURATION)
        assert res.returncode == 0, res.stderr
        assert r["verdict"] == "compute-bound", r["baseline"]
        assert "compute-bound" in [f["id"] for f in r["findings"]]
        top = r["attach"]["mains"][0]["busiest_loop_frames"][0]
        assert top["file"] == script("compute_bound.py") and top["line"] == line_of("compute_bound.py", "MATMUL LINE")
        assert_still_progressing(proc, progress)


@pytest.mark.alone
def test_launcher_pid_under_torchrun(tmp_path):
    """The PID given is torchrun's: the training process is found among its descendants."""
    progress = str(tmp_path / "rank.steps")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                             script("data_bound.py"), progress], cwd=SCRIPTS, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_steps(progress, 3, READY_TIMEOUT, proc)
        res, r = attach(proc.pid, tmp_path / "out", "--duration", DURATION)
        assert res.returncode == 0, res.stderr
        roles = {p["pid"]: (p["role"], p["rank"]) for p in r["attach"]["processes"]}
        assert roles[proc.pid] == ("other", None)
        mains = [pid for pid, (role, _) in roles.items() if role == "main"]
        assert len(mains) == 1 and roles[mains[0]][1] == 0 and mains[0] != proc.pid
        assert r["loaders"][0]["num_workers"] == 2 and r["loaders"][0]["rank"] == 0
        assert r["verdict"] == "data-bound" and r["target"]["path"] == script("data_bound.py")
        assert_still_progressing(proc, progress)
    finally:
        kill_group(proc)


# ---------------------------------------------------------------- PIDs that cannot be diagnosed


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)
    return p.pid  # reaped: nothing runs under this PID now (reuse within the test is improbable)


def test_pid_not_running(tmp_path):
    res, r = attach(_dead_pid(), tmp_path / "out")
    assert res.returncode == 2 and r is None
    assert "is not running" in res.stderr
    assert_no_traceback(res)
    assert not os.path.exists(tmp_path / "out")


def test_not_python(tmp_path):
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        res, r = attach(proc.pid, tmp_path / "out")
        assert res.returncode == 2 and r is None
        assert "not a Python process" in res.stderr
        assert_no_traceback(res)
        assert proc.poll() is None
    finally:
        kill_group(proc)


def test_python_without_dataloader(tmp_path):
    with target("no_loader.py", tmp_path) as (proc, progress):
        res, r = attach(proc.pid, tmp_path / "out", "--duration", "2")
        assert res.returncode == 2 and r is None
        assert "no thread was inside a torch DataLoader" in res.stderr
        assert_no_traceback(res)
        assert_still_progressing(proc, progress)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv"), reason="needs root and setpriv")
def test_no_ptrace_rights(tmp_path):
    """py-spy run as an unprivileged user (the real py-spy, the real refusal) against our process."""
    from loaderdoctor.observe.stacks import pyspy_path

    wrapper = tmp_path / "py-spy-as-nobody"
    wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups "
                       f"{pyspy_path()} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        res = run_cli("attach", str(proc.pid), "--out", str(tmp_path / "out"), timeout=ATTACH_TIMEOUT,
                      env={"LOADERDOCTOR_PY_SPY": str(wrapper)})
        assert res.returncode == 2, (res.stdout, res.stderr)
        text = " ".join(res.stderr.split())
        assert "ptrace is not permitted" in text and "Permission Denied" in text
        assert "SYS_PTRACE" in text and "--cap-add SYS_PTRACE" in text
        assert_no_traceback(res)
        assert proc.poll() is None
    finally:
        kill_group(proc)
