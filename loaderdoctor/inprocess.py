"""In the user's own process: check a live DataLoader without risking a hang.

    from loaderdoctor import assert_loader_healthy
    assert_loader_healthy(loader, batches=5, timeout=30)

The batches are drawn on a helper thread while the caller waits with a deadline. On a
stall, the workers' stacks are taken (py-spy, or faulthandler armed through the chained
worker_init_fn) before the workers are ended, and the check fails with the culprit.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import traceback

from loaderdoctor import watchdog
from loaderdoctor.hooks import ChainedWorkerInit
from loaderdoctor.render.text import frame_line


class LoaderUnhealthy(AssertionError):
    """The loader hung or failed; `culprit` and `stacks` say where."""

    def __init__(self, message: str, culprit: dict | None = None, stacks: list | None = None):
        super().__init__(message)
        self.culprit = culprit
        self.stacks = stacks or []


def _thread_frames(thread: threading.Thread) -> list[dict]:
    frame = sys._current_frames().get(thread.ident)
    return [{"function": fs.name, "file": fs.filename, "line": fs.lineno}
            for fs in reversed(traceback.extract_stack(frame))] if frame else []


def _end_workers(it) -> None:
    try:  # stop torch's SIGCHLD handler from raising in the caller when we end them
        from torch.utils.data._utils import signal_handling

        if getattr(it, "_worker_pids_set", False) and hasattr(signal_handling, "_remove_worker_pids"):
            signal_handling._remove_worker_pids(id(it))
            it._worker_pids_set = False  # so torch's own shutdown does not remove them twice
    except Exception:
        pass
    for w in getattr(it, "_workers", None) or []:
        try:
            w.kill()
        except Exception:
            pass
    for w in getattr(it, "_workers", None) or []:
        try:
            w.join(timeout=5)
        except Exception:
            pass


def assert_loader_healthy(loader, batches: int = 5, timeout: float = 30.0, stack_method: str = "auto") -> int:
    """Draw `batches` batches within `timeout` seconds each, or fail with the culprit frame and
    every worker's stack. Returns the number of batches drawn."""
    stack_dir = tempfile.mkdtemp(prefix="loaderdoctor-")
    old_init = loader.worker_init_fn
    loader.worker_init_fn = ChainedWorkerInit(old_init, stack_dir)
    state: dict = {"n": 0, "error": None, "it": None}
    progress = threading.Event()
    done = threading.Event()

    def draw() -> None:
        try:
            it = state["it"] = iter(loader)
            progress.set()
            for _ in range(batches):
                next(it)
                state["n"] += 1
                progress.set()
        except StopIteration:
            pass
        except BaseException as exc:  # reported to the caller below
            state["error"] = exc
        finally:
            done.set()
            progress.set()

    t = threading.Thread(target=draw, name="loaderdoctor-check", daemon=True)
    try:
        t.start()
        while not done.is_set():
            progress.clear()
            if done.is_set():
                break
            if not progress.wait(timeout):
                raise _stalled(loader, state, t, timeout, stack_dir, stack_method)
        if state["error"] is not None:
            exc = state["error"]
            raise LoaderUnhealthy(f"the DataLoader failed after {state['n']} batches: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return state["n"]
    finally:
        loader.worker_init_fn = old_init
        shutil.rmtree(stack_dir, ignore_errors=True)


def _stalled(loader, state, thread, timeout, stack_dir, stack_method) -> LoaderUnhealthy:
    it = state["it"]
    workers = [w.pid for w in (getattr(it, "_workers", None) or []) if w.pid]
    _, stacks = watchdog.capture_stacks({pid: "worker" for pid in workers}, stack_dir, stack_method)
    me = watchdog.ProcessStack(os.getpid(), "main", [watchdog.ThreadStack("MainThread", _thread_frames(thread))])
    stacks.insert(0, me)
    culprit = watchdog.find_culprit(stacks)
    _end_workers(it)
    lines = [f"the DataLoader produced no batch for {timeout:g} s (after {state['n']} batches)."]
    lines.append(f"Culprit: {frame_line(culprit)} in the {culprit['role']} (pid {culprit['pid']})" if culprit
                  else "Culprit: no frame in your own code was found.")
    for ps in stacks:
        lines.append(f"{ps.role} pid {ps.pid}:")
        for th in ps.threads[:1] if ps.role == "main" else ps.threads:
            for f in watchdog.own_frames(th.frames)[:8]:
                lines.append(f"    {frame_line(f)}")
    if not workers:
        lines.append("(num_workers=0: the stuck read runs on a helper thread that cannot be ended; it is left "
                     "blocked as a daemon thread)")
    return LoaderUnhealthy("\n".join(lines), culprit, stacks)
