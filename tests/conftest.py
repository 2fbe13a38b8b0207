import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
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


# Parallel runs (pytest -n 2, pytest-xdist). A test whose assertions rest on measured throughput
# (a sweep, a confirm, a share of the step, a verdict, noisy-machine) must have the machine to
# itself: it runs alone. Tests marked `shares_machine` (hangs, crashes, forensics, framework
# runs that check every stage runs, usage errors) and the unit tier may run two at a time;
# `alone` overrides a module's shares_machine for one test (one that reads /dev/shm or the
# machine's OOM counters, or asserts a verdict from timing). It is a readers-writer lock over
# two files every worker of the run opens: an alone test takes the turnstile (no new test
# starts) and then the room exclusively; a sharing test passes the turnstile and takes the
# room shared. Every wait is bounded.
LOCK_WAIT = 1800  # longer than any test; reaching it means a worker died holding a lock


def _shares_machine(item) -> bool:
    if item.get_closest_marker("alone") is not None:
        return False
    return item.get_closest_marker("shares_machine") is not None or "unit" in item.path.parts


def _take(f, how: int, what: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(f, how | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited {LOCK_WAIT} s for the {what} lock of the parallel test run")
            time.sleep(0.05)


def _lock_base() -> str | None:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return os.path.join(tempfile.gettempdir(), f"loaderdoctor-tests-{run}") if run else None


@contextlib.contextmanager
def _machine(item):
    base = _lock_base()
    if base is None:  # one test at a time anyway
        yield
        return
    with open(base + ".turnstile", "a") as turn, open(base + ".room", "a") as room:
        _take(turn, fcntl.LOCK_EX, "turnstile")
        if _shares_machine(item):
            try:
                _take(room, fcntl.LOCK_SH, "shared")
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)
            try:
                yield
            finally:
                fcntl.flock(room, fcntl.LOCK_UN)
        else:
            try:
                _take(room, fcntl.LOCK_EX, "exclusive")
                try:
                    yield
                finally:
                    fcntl.flock(room, fcntl.LOCK_UN)
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)


def pytest_collection_modifyitems(config, items):
    """Under -n: the tests that share the machine first, the alone ones after, each in its
    collection order. Every switch between the two costs a wait (an alone test waits for the
    other worker's test to end), so they are not interleaved."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: not _shares_machine(item))  # stable


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # around setup, call and teardown: a module fixture that runs a probe is inside it too
    with _machine(item):
        yield


def pytest_sessionfinish(session):
    # a worker here runs no more tests: the other (if still running) needs no lock from it
    base = _lock_base()
    for path in (base + ".turnstile", base + ".room") if base else ():
        with contextlib.suppress(OSError):
            os.unlink(path)
