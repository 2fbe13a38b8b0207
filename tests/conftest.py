import os
import subprocess
import sys
import time

import psutil
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "e2e", "scripts")
CLI_TIMEOUT = 240  # every wait in a test is bounded


def script(name: str) -> str:
    return os.path.join(SCRIPTS, name)


# Every process this test session starts inherits this tag, so the leak check below finds
# this session's processes and nobody else's (another probe running on the machine).
TEST_TAG = f"{os.getpid()}-{time.time_ns()}"
os.environ["LOADERDOCTOR_TEST_SESSION"] = TEST_TAG


def run_processes_left() -> list[psutil.Process]:
    """Processes of a loaderdoctor run started by this test session that are still alive."""
    left = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == os.getpid():
            continue
        try:
            env = p.environ()
            # a warm start's process and everything forked from it show its exec's environment
            # (no run id) and its command line
            ours = "LOADERDOCTOR_RUN" in env or any("loaderdoctor.child.warm" in a for a in p.cmdline())
            if ours and env.get("LOADERDOCTOR_TEST_SESSION") == TEST_TAG and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.Error:
            continue
    return left


def _describe(p: psutil.Process):
    try:
        return (p.pid, p.cmdline())
    except psutil.Error:
        return (p.pid, "?")


@pytest.fixture(autouse=True)
def no_process_left_behind():
    yield
    deadline = time.monotonic() + 10
    left = run_processes_left()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = run_processes_left()
    for p in left:  # clean up so one failure does not cascade, then fail
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, f"processes of a run survived the test: {[_describe(p) for p in left]}"


def run_cli(*args, timeout: float = CLI_TIMEOUT, env: dict | None = None, cwd: str | None = None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "loaderdoctor", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)
