"""The processes of a run, and ending them all."""

from __future__ import annotations

import os
import signal
import time

import psutil

from loaderdoctor.protocol import RUN_ID_ENV


def run_processes(root_pid: int, run_id: str | None, adopter: int | None = None) -> list[psutil.Process]:
    """The root, its descendants, and any process carrying the run's id in its environment
    (a process that left our session still belongs to the run). `adopter`: a subreaper that
    serves only this run (the warm process, orchestrate/warmstart.py): the orphans it adopted
    are the run's too (a forked process's environment shows its exec's, without the run's id)."""
    procs: dict[int, psutil.Process] = {}
    for pid, with_root in ((root_pid, True), (adopter, False)):
        if pid is None:
            continue
        try:
            root = psutil.Process(pid)
            if with_root:
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


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process has ended; returns those still running at the timeout. Our own
    children are reaped (psutil's wait, as subprocess would). Any other process counts as ended
    once it is a zombie: dead, its memory freed, only its exit status left for its parent (or
    init, for an orphaned DataLoader worker) to collect. Waiting for that collection waited on
    init's own pace (~1-2 s per stage with workers here) for nothing."""
    me = os.getpid()
    mine, others = [], []
    for p in procs:
        try:
            (mine if p.ppid() == me else others).append(p)
        except psutil.Error:
            continue  # already gone
    deadline = time.monotonic() + timeout
    _, alive = psutil.wait_procs(mine, timeout=timeout)
    delay = 0.005
    while others:
        running = []
        for p in others:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    running.append(p)
            except psutil.NoSuchProcess:
                continue
            except psutil.Error:
                running.append(p)
        others = running
        if not others or time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(2 * delay, 0.05)
    return alive + others


def end_run(root_pid: int, run_id: str | None, timeout: float = 5.0, adopter: int | None = None) -> list[int]:
    """End every process of the run and reap it. Returns the pids that survived (should be
    none). multiprocessing's resource tracker is left for last: once every other process is
    gone it unlinks the semaphores and shared memory the run registered (spawn/forkserver),
    which a SIGKILL of the whole group would leave behind in /dev/shm."""
    trackers: list[psutil.Process] = []
    for _ in range(2):  # a second pass catches a process born during the first
        procs = run_processes(root_pid, run_id, adopter)
        others = []
        for p in procs:
            (trackers if _is_resource_tracker(p) else others).append(p)
        for p in others:
            try:
                p.kill()
            except psutil.Error:
                pass
        _wait_gone(others, timeout)
    if trackers:
        _wait_gone(list({t.pid: t for t in trackers}.values()), timeout)
    try:
        os.killpg(root_pid, signal.SIGKILL)  # the runner led its own session/group: sweep it
    except (ProcessLookupError, PermissionError):
        pass
    procs = run_processes(root_pid, run_id, adopter)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    return [p.pid for p in _wait_gone(procs, timeout)]
