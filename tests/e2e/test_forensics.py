"""Real hangs and crashes, bounded in time: `check` exit codes, culprits, stacks, clean-up."""

import contextlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import CLI_TIMEOUT, run_cli, script

pytestmark = [pytest.mark.slow, pytest.mark.shares_machine]

TIMEOUT = "3"
FIRST = "5"


def check(name, *extra, env=None, out=None):
    t = time.monotonic()
    res = run_cli("check", script(name), "--timeout", TIMEOUT, "--first-batch-timeout", FIRST, "--steps", "30",
                  *(["--out", str(out)] if out else []), *extra, env=env, timeout=120)
    return res, time.monotonic() - t


def test_getitem_blocking_forever_names_the_worker_line(tmp_path):
    res, took = check("hang_in_getitem.py", out=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "HANG" in res.stderr
    assert "Culprit: Records.__getitem__" in res.stderr and "hang_in_getitem.py:16) in the worker process" in res.stderr
    assert took < float(FIRST) + float(TIMEOUT) + 15 + 10  # stall + allowance + capture + start-up
    hang = json.load(open(tmp_path / "stages" / "check" / "stacks" / "hang.json"))
    roles = sorted(p["role"] for p in hang)
    assert roles.count("worker") == 2 and "main" in roles


def test_lock_held_at_fork_hangs_and_names_the_thread(tmp_path):
    res = run_cli("probe", "--stages", "baseline", script("fork_lock.py"), "--out", str(tmp_path), "--timeout", TIMEOUT,
                  "--first-batch-timeout", FIRST, "-q", "--", "fork", timeout=120)
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["verdict"] == "hang"
    (h,) = r["hangs"]
    assert h["culprit"]["role"] == "worker" and h["culprit"]["line"] == 26
    assert h["culprit"]["file"].endswith("fork_lock.py")
    assert "metrics-flusher" in h["threads_at_fork"]
    finding = next(f for f in r["findings"] if f["id"] == "hang")
    assert "metrics-flusher" in finding["evidence"] and "spawn" in finding["fix"]


def test_same_lock_script_under_spawn_passes(tmp_path):
    res = run_cli("check", script("fork_lock.py"), "--timeout", "20", "--steps", "20", "--out", str(tmp_path),
                  "--", "spawn", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "healthy" in res.stdout


def test_null_pointer_in_worker_is_a_sigsegv_with_the_calling_function(tmp_path):
    res, _ = check("segfault_worker.py", out=tmp_path)
    assert res.returncode == 4, res.stderr
    assert "SIGSEGV" in res.stderr
    assert "Culprit: decode_record" in res.stderr and "segfault_worker.py:10" in res.stderr


def test_sigkilled_worker_is_a_crash_with_sigkill(tmp_path):
    res, _ = check("sigkill_worker.py", out=tmp_path)
    assert res.returncode == 4, res.stderr
    assert "SIGKILL" in res.stderr and "worker process failed" in res.stderr


def test_worker_death_torch_notices_late_is_a_crash_not_a_hang(tmp_path):
    """torch's own check finds the dead worker only after 5 s, past the 3 s allowance: the
    watchdog sees the dead worker and lets torch say so instead of calling it a hang."""
    res, _ = check("sigkill_worker_unnoticed.py", out=tmp_path)
    assert res.returncode == 4, res.stderr
    assert "SIGKILL" in res.stderr and "HANG" not in res.stderr


def test_step_blocking_in_main_blames_main_not_workers(tmp_path):
    res, _ = check("hang_in_step.py", out=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "Culprit: sync_with_parameter_server" in res.stderr and "in the main process" in res.stderr


def test_worker_valueerror_keeps_type_and_message(tmp_path):
    res = run_cli("probe", "--stages", "baseline", script("raise_in_worker.py"), "--out", str(tmp_path), "-q", timeout=120)
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    (c,) = r["crashes"]
    assert c["role"] == "worker" and c["exception_type"] == "ValueError"
    assert c["message"] == "<script>alert(1)</script>"
    assert c["culprit"]["function"] == "__getitem__" and c["culprit"]["line"] == 12
    assert "Original Traceback" in c["worker_traceback"]
    assert r["verdict"] == "crash" and r["findings"][0]["id"] == "worker-crash"


def test_script_error_outside_the_pipeline(tmp_path):
    res, _ = check("raise_in_script.py", out=tmp_path)
    assert res.returncode == 4, res.stderr
    assert "RuntimeError" in res.stderr and "Culprit: log_metrics" in res.stderr


def test_healthy_loop_passes_the_gate(tmp_path):
    res, _ = check("healthy_workers.py", out=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("how", ["option", "missing", "cannot-attach"])
def test_faulthandler_fallback_still_names_the_line(tmp_path, how):
    if how == "option":
        res, _ = check("hang_in_getitem.py", "--stack-method", "faulthandler", out=tmp_path)
        why = "--stack-method faulthandler"
    elif how == "missing":  # the py-spy named does not exist: auto falls back
        res, _ = check("hang_in_getitem.py", out=tmp_path, env={"LOADERDOCTOR_PY_SPY": str(tmp_path / "no-py-spy")})
        why = "is not an executable file"
    else:  # a py-spy that cannot attach (as without ptrace rights): it fails, auto falls back
        fake = tmp_path / "py-spy"
        fake.write_text("#!/bin/sh\necho 'Error: Permission Denied: Try running again with elevated permissions' >&2\n"
                        "exit 1\n")
        fake.chmod(0o755)
        res, _ = check("hang_in_getitem.py", out=tmp_path / "o", env={"LOADERDOCTOR_PY_SPY": str(fake)})
        why = "Permission Denied"
    assert res.returncode == 3, res.stderr
    assert "Stacks (faulthandler; py-spy not used: " in res.stderr and why in res.stderr
    assert "hang_in_getitem.py:16) in the worker process" in res.stderr


def test_py_spy_beside_python_is_found_without_path(tmp_path):
    """A virtualenv's py-spy is used when the venv is not activated (its bin not on PATH)."""
    res, _ = check("hang_in_getitem.py", out=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 3, res.stderr
    assert "Stacks (py-spy):" in res.stderr and "Culprit: Records.__getitem__" in res.stderr


def test_junit_and_github_step_summary(tmp_path):
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    summary.write_text("previous content\n")
    res, _ = check("hang_in_step.py", "--junit-xml", str(junit), out=tmp_path / "o",
                   env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.returncode == 3
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure.get("type") == "hang" and "sync_with_parameter_server" in failure.text
    text = summary.read_text()
    assert text.startswith("previous content\n") and "HANG" in text and "sync_with_parameter_server" in text


def test_check_usage_errors():
    res = run_cli("check", script("healthy_workers.py"))  # --timeout is required
    assert res.returncode == 2
    res = run_cli("check", "/nonexistent/train.py", "--timeout", "5")
    assert res.returncode == 2 and "no such file" in res.stderr


def test_stack_dump_contains_every_process(tmp_path):
    res, _ = check("hang_in_getitem.py", out=tmp_path)
    assert res.returncode == 3
    stacks_dir = tmp_path / "stages" / "check" / "stacks"
    files = os.listdir(stacks_dir)
    assert "hang.json" in files
    # faulthandler files exist for main and both workers (the fallback is armed everywhere)
    assert sum(f.startswith("worker-") for f in files) == 2 and sum(f.startswith("main-") for f in files) == 1


@pytest.mark.alone
def test_spawn_hang_leaves_no_shared_memory_behind(tmp_path):
    before = set(os.listdir("/dev/shm"))
    res, _ = check("spawn_hang.py", out=tmp_path)
    assert res.returncode == 3, res.stderr
    left = set(os.listdir("/dev/shm")) - before
    assert not left, f"left in /dev/shm: {sorted(left)}"


@contextlib.contextmanager
def memory_limited_cgroup(limit: int):
    """A memory cgroup of our own with `limit` bytes (no swap); skips when this machine
    does not let us make one (not root, no memory controller)."""
    name = f"loaderdoctor-test-{os.getpid()}-{time.time_ns()}"
    v1, v2 = "/sys/fs/cgroup/memory", "/sys/fs/cgroup"
    try:
        if os.path.isfile(os.path.join(v1, "memory.limit_in_bytes")):
            d = os.path.join(v1, name)
            os.mkdir(d)
            files = {"memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit}
        elif "memory" in open(os.path.join(v2, "cgroup.subtree_control")).read().split():
            d = os.path.join(v2, name)
            os.mkdir(d)
            files = {"memory.max": limit, "memory.swap.max": 0}
        else:
            pytest.skip("no memory cgroup controller to limit a run's memory")
    except OSError as e:
        pytest.skip(f"cannot make a memory cgroup here: {e}")
    try:
        for f, v in files.items():
            if os.path.exists(os.path.join(d, f)):
                with open(os.path.join(d, f), "w") as fh:
                    fh.write(str(v))
        yield d
    finally:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                os.rmdir(d)
                break
            time.sleep(0.2)


@pytest.mark.alone
def test_worker_killed_by_the_oom_killer_is_worker_oom(tmp_path):
    """A real OOM kill: the run under a 1 GiB memory cgroup, the workers' cache growing."""
    with memory_limited_cgroup(2**30) as cg:
        def join():
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        res = subprocess.run([sys.executable, "-m", "loaderdoctor", "probe", script("oom_worker.py"), "--stages",
                              "baseline", "--steps", "5000", "--timeout", "10", "-q", "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=CLI_TIMEOUT, preexec_fn=join)
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["verdict"] == "crash" and r["environment"]["cgroup_memory_limit_bytes"] == 2**30
    (c,) = r["crashes"]
    assert c["role"] == "worker" and c["signal"] == "SIGKILL" and c["oom"]
    assert any(src.endswith("memory.oom_control") or src.endswith("memory.events") for src in c["oom_record"])
    assert c["memory"]["readings"] >= 2 and c["memory"]["peak_mb"] > c["memory"]["first_mb"], c["memory"]
    f = next(f for f in r["findings"] if f["id"] == "worker-oom")
    assert f"Worker pid {c['pid']} was killed by SIGKILL" in f["evidence"] and "oom_kill counter rose" in f["evidence"]
    assert "worker-crash" not in {f["id"] for f in r["findings"]}
