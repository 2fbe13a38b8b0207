"""Every process of a run follows its parent: the runner dies with loaderdoctor, a DataLoader
worker dies with the runner, even when the parent was killed with SIGKILL.

The runner uses the kernel's parent-death signal (PR_SET_PDEATHSIG through ctypes; Linux
only, a no-op elsewhere). A worker cannot: the death signal follows the *thread* that
forked it, and loaders iterated from a thread (MONAI's ThreadDataLoader, a prefetching
wrapper) would lose their workers when that thread ends. A worker gets a watcher thread
instead, which polls its parent and leaves at once when it is gone: a worker blocked in
the user's __getitem__ never checks torch's own watchdog."""

from __future__ import annotations

import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5
WATCHER_NAME = "loaderdoctor-parent-watch"


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent thread exits."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants of this process become its children, not init's."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def preexec_die_with_parent() -> None:
    """For subprocess.Popen(preexec_fn=...): the child (py-spy, the runner) dies with us."""
    die_with_parent()


def watch_parent(interval: float = WATCH_INTERVAL_S) -> threading.Thread | None:
    """Leave (os._exit) as soon as this process's parent is gone. Idempotent per process."""
    if any(t.name == WATCHER_NAME for t in threading.enumerate()):
        return None
    parent = os.getppid()

    def run() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            threading.Event().wait(interval)

    t = threading.Thread(target=run, name=WATCHER_NAME, daemon=True)
    t.start()
    return t


def leave(code: int) -> None:
    """Flush what the process printed and leave at once (os._exit): no interpreter teardown, no
    user or framework code after this point; the parent ends whatever of the run is left."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code if 0 <= code < 256 else 1)
