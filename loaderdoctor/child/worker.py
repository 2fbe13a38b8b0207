"""What runs inside each DataLoader worker: faulthandler stack files and the user's worker_init_fn, chained."""

from __future__ import annotations

import faulthandler
import os
import signal
from typing import Any, Callable


class ChainedWorkerInit:
    """worker_init_fn wrapper: faulthandler into a per-worker stack file, the per-fetch events
    (child/workerevents.py), then the user's function. Module-level and plain attributes, so it pickles under spawn/forkserver."""

    def __init__(self, user_fn: Callable[[int], Any] | None, stack_dir: str | None, events: dict | None = None):
        self.user_fn = user_fn
        self.stack_dir = stack_dir
        self.events = events  # where this worker writes its fetch events (child/workerevents.py)

    def __call__(self, worker_id: int) -> None:
        from loaderdoctor import lifeline

        lifeline.watch_parent()  # a worker blocked in __getitem__ still ends with its parent
        if self.stack_dir:
            enable_stack_file(self.stack_dir, "worker")
        if getattr(self, "events", None):
            from loaderdoctor.child import workerevents

            workerevents.install_in_worker(self.events, worker_id)
        if self.user_fn is not None:
            self.user_fn(worker_id)


_STACK_FILES: list = []  # kept open for the life of the process: faulthandler writes to its fd


def enable_stack_file(stack_dir: str, role: str) -> str | None:
    """faulthandler: fatal signals and SIGUSR1 dump every thread's Python stack into
    stack_dir/<role>-<pid>.txt. Returns the path, or None when it cannot be set up."""
    try:
        path = os.path.join(stack_dir, f"{role}-{os.getpid()}.txt")
        f = open(path, "a", buffering=1)
        # A forked worker inherits the parent's faulthandler, and torch then installs its
        # own SIGSEGV/SIGBUS handlers over it; enable() alone would keep torch's. Disable and
        # enable again so faulthandler dumps first and then chains to torch's handler.
        faulthandler.disable()
        faulthandler.enable(file=f, all_threads=True)
        if hasattr(faulthandler, "register"):
            faulthandler.register(signal.SIGUSR1, file=f, all_threads=True, chain=False)
        _STACK_FILES.append(f)
        return path
    except (OSError, ValueError, RuntimeError):
        return None
