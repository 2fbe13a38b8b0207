"""Stacks of a running process tree.

Stack capture prefers `py-spy dump --json` (every thread of every process, no cooperation
needed); when py-spy is missing or cannot attach, it falls back to faulthandler: SIGUSR1
makes the runner and each worker (set up through the chained worker_init_fn) write every
thread's Python stack into the run's stack directory."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from loaderdoctor.frames import (
    DUMP_MARKER,
    ProcessStack,
    ThreadStack,
    parse_faulthandler,
)
from loaderdoctor.lifeline import preexec_die_with_parent

PY_SPY_ENV = "LOADERDOCTOR_PY_SPY"


def pyspy_path() -> str | None:
    """The py-spy to use: $LOADERDOCTOR_PY_SPY when it is set (that one only), else the one
    installed beside this Python (a virtualenv or pipx install not on PATH), else PATH's."""
    forced = os.environ.get(PY_SPY_ENV)
    if forced:
        return forced if os.path.isfile(forced) and os.access(forced, os.X_OK) else None
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("py-spy")


def _pyspy_dump(pids: list[int], timeout: float) -> tuple[dict[int, list[ThreadStack]], str | None]:
    """py-spy's stacks of each process it could read, and why it read none (None when it did)."""
    exe = pyspy_path()
    if not exe:
        forced = os.environ.get(PY_SPY_ENV)
        return {}, (f"{PY_SPY_ENV}={forced} is not an executable file" if forced
                    else "py-spy was not found beside Python or on PATH")
    jobs = {}
    errors: list[str] = []
    for pid in pids:
        try:
            jobs[pid] = subprocess.Popen([exe, "dump", "--pid", str(pid), "--json"], preexec_fn=preexec_die_with_parent,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            errors.append(f"{exe} could not be started: {e}")
    out: dict[int, list[ThreadStack]] = {}
    deadline = time.monotonic() + timeout
    for pid, job in jobs.items():
        try:
            stdout, stderr = job.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.kill()
            job.communicate()
            errors.append(f"py-spy did not answer within {timeout:.0f} s")
            continue
        if job.returncode != 0:
            said = (stderr or b"").decode(errors="replace").strip().splitlines()
            errors.append(f"py-spy could not read pid {pid}: {said[-1] if said else f'exit code {job.returncode}'}")
            continue
        try:
            threads = json.loads(stdout)
        except ValueError:
            continue
        out[pid] = [
            ThreadStack(t.get("thread_name"),
                        [{"function": f.get("name"), "file": f.get("filename"), "line": f.get("line")}
                         for f in t.get("frames", [])])
            for t in threads
        ]
    return out, (None if out else (errors[0] if errors else "py-spy read no process"))


def _stack_files(stack_dir: str, pid: int) -> list[str]:
    return glob.glob(os.path.join(stack_dir, f"*-{pid}.txt"))


def read_stack_file(stack_dir: str, pid: int) -> tuple[str | None, list[ThreadStack]] | None:
    """The last faulthandler dump a process wrote, if any."""
    for path in _stack_files(stack_dir, pid):
        try:
            with open(path, errors="replace") as f:
                dumps = [d for d in parse_faulthandler(f.read()) if d[1]]
        except OSError:
            continue
        if dumps:
            return dumps[-1]
    return None


def _faulthandler_dump(pids: list[int], stack_dir: str, wait: float = 1.0) -> dict[int, list[ThreadStack]]:
    for pid in pids:
        files = _stack_files(stack_dir, pid)
        if not files:
            continue  # no handler registered there: SIGUSR1 would kill it
        for path in files:
            try:
                with open(path, "a") as f:
                    f.write(DUMP_MARKER + "\n")
            except OSError:
                pass
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:  # bounded: give the handlers a moment to write
        time.sleep(0.05)
    out = {}
    for pid in pids:
        got = read_stack_file(stack_dir, pid)
        if got:
            out[pid] = got[1]
    return out


def capture_stacks(pids_roles: dict[int, str], stack_dir: str | None, method: str = "auto",
                   timeout: float = 5.0) -> tuple[str, list[ProcessStack], str | None]:
    """Stacks of the given processes. Returns (method used, stacks, why py-spy was not used:
    None when it was)."""
    pids = list(pids_roles)
    got: dict[int, list[ThreadStack]] = {}
    used = "py-spy"
    why_not = None if method in ("auto", "py-spy") else f"--stack-method {method}"
    if method in ("auto", "py-spy"):
        got, why_not = _pyspy_dump(pids, timeout)
    if not got and stack_dir and method in ("auto", "faulthandler"):
        used = "faulthandler"
        got = _faulthandler_dump(pids, stack_dir)
    stacks = [ProcessStack(pid, pids_roles[pid], got[pid]) for pid in pids if pid in got]
    return used, stacks, why_not
