"""The runner child: `python -m loaderdoctor.runner SPEC.json`.

Runs the user's target exactly as `python train.py ARGS` would (__name__ == "__main__",
__file__, sys.argv, sys.path[0]; spawn/forkserver workers re-import it as __mp_main__),
with the hooks installed, and streams events to the parent on the fd named in
LOADERDOCTOR_EVENT_FD. It never writes a report: only the parent does.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


class Emitter:
    """Writes events to the parent's pipe. Events the parent acts on are written at once;
    per-batch events (`batch`) are gathered and written together every FLUSH_S, which keeps
    a write syscall off most training steps (one per step measured ~1% of a 3 ms step). The
    parent sees batches up to FLUSH_S late, far inside any watchdog timeout; a process killed
    outright loses at most the last FLUSH_S of batch events."""

    FLUSH_S = 0.05

    def __init__(self, fd: int | None):
        self.fd = fd
        self._pending: list[str] = []
        self._flushed_at = float("-inf")
        if hasattr(os, "register_at_fork"):  # a forked worker must never re-send the parent's batches
            os.register_at_fork(after_in_child=self._pending.clear)

    def __call__(self, line: str) -> None:
        if self.fd is None:
            return
        if self._pending:  # keep the order: the batches before this event go first
            self._pending.append(line)
            self._write_pending()
        else:
            self._write(line + "\n")

    def batch(self, line: str, now: float) -> None:
        if self.fd is None:
            return
        self._pending.append(line)
        if now - self._flushed_at >= self.FLUSH_S:
            self._flushed_at = now
            self._write_pending()

    def flush(self) -> None:
        if self._pending and self.fd is not None:
            self._write_pending()

    def _write_pending(self) -> None:
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        self._write(text)

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        try:
            while data and self.fd is not None:
                data = data[os.write(self.fd, data):]
        except OSError:
            self.fd = None  # the parent is gone; keep the script running undisturbed

    def json(self, obj: dict) -> None:
        self(json.dumps(obj, default=str))


def exception_record(exc: BaseException) -> dict:
    frames = []
    for fs in reversed(traceback.extract_tb(exc.__traceback__)):  # innermost first
        frames.append({"function": fs.name, "file": fs.filename, "line": fs.lineno})
    return {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "frames": frames,
    }


def _cuda_sync():
    """Synchronise before reading the clock when CUDA is in use, so GPU time counts as
    compute, not data wait. None when there is no CUDA (nothing to wait for)."""
    import torch

    try:
        if not torch.cuda.is_available():
            return None
    except Exception:
        return None

    def sync() -> None:
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()

    return sync


def _quiet_sigchld() -> None:
    """The script is over: stop torch's SIGCHLD handler from raising again (a second worker
    ending) while the outcome is recorded. Nothing of the script runs after this."""
    import signal

    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def run(spec: dict, emit: Emitter) -> int:
    if spec.get("kind") == "notebook":
        from loaderdoctor import notebook

        how, code, exc_rec = notebook.run_notebook(spec, emit)
        emit.json({"e": "exit", "how": how, "code": code, "exc": exc_rec})
        return code
    from loaderdoctor import hooks

    stack_dir = spec.get("stack_dir")
    if stack_dir:
        hooks.enable_stack_file(stack_dir, "main")
    t = time.perf_counter()
    import torch  # noqa: F401  (timed: the import is part of every stage's start-up)

    emit.json(hooks.hello(torch_import_s=round(time.perf_counter() - t, 3)))
    rec = hooks.recorder_from_spec(spec, emit, _cuda_sync())
    hooks.install(rec)

    path = spec["target"]
    sys.argv = [path, *spec.get("argv", [])]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    import runpy

    how, code, exc_rec = "finished", 0, None
    try:
        runpy.run_path(path, run_name="__main__")
    except hooks.StopProbe:
        how = "stopped"
    except SystemExit as exc:
        how = "sysexit"
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException as exc:  # the script's own failure: recorded, not ours to raise
        _quiet_sigchld()
        how, code = "exception", 1
        try:
            exc_rec = exception_record(exc)
            traceback.print_exc()
        except BaseException:  # a late signal while formatting: keep the essentials
            exc_rec = {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc),
                       "traceback": "", "frames": []}
    emit.json({"e": "exit", "how": how, "code": code, "exc": exc_rec})
    return code


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    fd = os.environ.get("LOADERDOCTOR_EVENT_FD")
    emit = Emitter(int(fd) if fd else None)
    code = run(spec, emit)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # Leave without interpreter teardown: joining the script's workers or threads could
    # hang; the parent ends whatever of the run is left.
    os._exit(code if 0 <= code < 256 else 1)


if __name__ == "__main__":
    main()
