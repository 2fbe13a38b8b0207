"""Parent side: the processes of a run, their stacks, and ending them.

Stack capture prefers `py-spy dump --json` (every thread of every process, no cooperation
needed); when py-spy is missing or cannot attach, it falls back to faulthandler: SIGUSR1
makes the runner and each worker (set up through the chained worker_init_fn) write every
thread's Python stack into the run's stack directory.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil

from loaderdoctor.codeloc import is_user_file
from loaderdoctor.protocol import RUN_ID_ENV

# ---------------------------------------------------------------- the process tree


def run_processes(root_pid: int, run_id: str | None) -> list[psutil.Process]:
    """The root, its descendants, and any process carrying the run's id in its environment
    (a process that left our session still belongs to the run)."""
    procs: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(root_pid)
        procs[root.pid] = root
        for c in root.children(recursive=True):
            procs[c.pid] = c
    except psutil.Error:
        pass
    if run_id:
        for p in psutil.process_iter(["pid"]):
            if p.pid in procs or p.pid == os.getpid():
                continue
            try:
                if p.environ().get(RUN_ID_ENV) == run_id:
                    procs[p.pid] = p
            except psutil.Error:
                continue
    return list(procs.values())


def _is_resource_tracker(p: psutil.Process) -> bool:
    try:
        return any("resource_tracker" in part for part in p.cmdline())
    except psutil.Error:
        return False


def end_run(root_pid: int, run_id: str | None, timeout: float = 5.0) -> list[int]:
    """End every process of the run and reap it. Returns the pids that survived (should be
    none). multiprocessing's resource tracker is left for last: once every other process is
    gone it unlinks the semaphores and shared memory the run registered (spawn/forkserver),
    which a SIGKILL of the whole group would leave behind in /dev/shm."""
    trackers: list[psutil.Process] = []
    for _ in range(2):  # a second pass catches a process born during the first
        procs = run_processes(root_pid, run_id)
        others = []
        for p in procs:
            (trackers if _is_resource_tracker(p) else others).append(p)
        for p in others:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(others, timeout=timeout)
    if trackers:
        psutil.wait_procs(list({t.pid: t for t in trackers}.values()), timeout=timeout)
    try:
        os.killpg(root_pid, signal.SIGKILL)  # the runner led its own session/group: sweep it
    except (ProcessLookupError, PermissionError):
        pass
    procs = run_processes(root_pid, run_id)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in alive]


# ---------------------------------------------------------------- stacks


@dataclass
class ThreadStack:
    name: str | None
    frames: list[dict]  # innermost first: {function, file, line}


@dataclass
class ProcessStack:
    pid: int
    role: str
    threads: list[ThreadStack] = field(default_factory=list)


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
            jobs[pid] = subprocess.Popen([exe, "dump", "--pid", str(pid), "--json"],
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


_FH_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-f]+)")
_FH_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.+)$')
DUMP_MARKER = "--- loaderdoctor: stack dump requested ---"


def parse_faulthandler(text: str) -> list[tuple[str | None, list[ThreadStack]]]:
    """Split faulthandler output into dumps: (fatal error or None, threads). A dump starts
    at a "Fatal Python error" line or at the marker the parent writes before SIGUSR1."""
    dumps: list[tuple[str | None, list[ThreadStack]]] = []
    threads: list[ThreadStack] | None = None
    for line in text.splitlines():
        if line.startswith("Fatal Python error:") or line.startswith(DUMP_MARKER):
            fatal = line.split(":", 1)[1].strip() if line.startswith("Fatal") else None
            threads = []
            dumps.append((fatal, threads))
            continue
        m = _FH_THREAD.match(line)
        if m:
            if threads is None:
                threads = []
                dumps.append((None, threads))
            current = m.group(1).startswith("Current")
            threads.append(ThreadStack("current" if current else m.group(2), []))
            continue
        m = _FH_FRAME.match(line)
        if m and threads:
            threads[-1].frames.append({"function": m.group(3), "file": m.group(1), "line": int(m.group(2))})
    return dumps


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


# ---------------------------------------------------------------- where it is stuck

_WAITING_FOR_DATA = ("_next_data", "_get_data", "_try_get_data")


def user_frames(frames: list[dict]) -> list[dict]:
    return [f for f in frames if is_user_file(f.get("file"))]


def _in_dataloader_wait(frames: list[dict]) -> bool:
    for f in frames:
        name = (f.get("function") or "").rsplit(".", 1)[-1]
        if name in _WAITING_FOR_DATA and "dataloader" in (f.get("file") or ""):
            return True
    return False


def _main_thread(ps: ProcessStack) -> ThreadStack | None:
    for t in ps.threads:
        if t.name in ("MainThread", "current"):
            return t
    return ps.threads[-1] if ps.threads else None


def own_frames(frames: list[dict]) -> list[dict]:
    """A worker's frames inside its own run: a forked worker's stack also shows the frames
    the parent had at fork (its <module>, its training loop), which it is not running."""
    for k, f in enumerate(frames):
        if (f.get("function") or "").endswith("_bootstrap") and "multiprocessing" in (f.get("file") or ""):
            return frames[:k]
    return frames


def find_culprit(stacks: list[ProcessStack]) -> dict | None:
    """Where the run is stuck. If the main thread waits inside the DataLoader, blame the
    worker sitting in user code; otherwise the main thread's innermost user frame."""
    main = next((p for p in stacks if p.role == "main"), None)
    main_t = _main_thread(main) if main else None
    waiting = main_t is not None and _in_dataloader_wait(main_t.frames)
    if main_t is not None and not waiting:
        uf = user_frames(main_t.frames)
        if uf:
            return {"role": "main", "pid": main.pid, **_frame(uf[0])}
    for p in stacks:
        if p.role != "worker":
            continue
        for t in p.threads:
            uf = user_frames(own_frames(t.frames))
            if uf:
                return {"role": "worker", "pid": p.pid, **_frame(uf[0])}
    if main_t is not None:
        uf = user_frames(main_t.frames)
        if uf:
            return {"role": "main", "pid": main.pid, **_frame(uf[0])}
    return None


def _frame(f: dict) -> dict:
    return {"function": f.get("function"), "file": f.get("file"), "line": f.get("line")}
