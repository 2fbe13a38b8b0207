"""The child's side of the event pipe (protocol.py has the event shapes)."""

from __future__ import annotations

import json
import os
import select

from loaderdoctor import lifeline

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)


class Emitter:
    """Writes events to the parent's pipe. Events the parent acts on are written at once;
    per-batch events (`batch`) are gathered and written together every FLUSH_S, which keeps
    a write syscall off most training steps (one per step measured ~1% of a 3 ms step). The
    parent sees batches up to FLUSH_S late, far inside any watchdog timeout; a process killed
    outright loses at most the last FLUSH_S of batch events."""

    FLUSH_S = 0.05

    def __init__(self, fd: int | None, rank: int | None = None):
        self.fd = fd
        # a rank of a distributed stage tags each event (every event line starts with "{")
        self.tag = None if rank is None else f'{{"rank":{int(rank)},'
        self._pending: list[str] = []
        self._flushed_at = float("-inf")
        if hasattr(os, "register_at_fork"):  # a forked worker must never re-send the parent's batches
            os.register_at_fork(after_in_child=self._pending.clear)

    def __call__(self, line: str) -> None:
        if self.fd is None:
            return
        if self.tag is not None:
            line = self.tag + line[1:]
        if self._pending:  # keep the order: the batches before this event go first
            self._pending.append(line)
            self._write_pending()
        else:
            self._write(line + "\n")

    def batch(self, line: str, now: float) -> None:
        if self.fd is None:
            return
        self._pending.append(line if self.tag is None else self.tag + line[1:])
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
        """Whole lines, in writes of at most PIPE_BUF bytes where the lines allow: such a write
        to a pipe is atomic, so the workers' own lines (child/workerevents.py) never land
        inside one of these (a single line longer than PIPE_BUF is written whole)."""
        data = text.encode("utf-8", "replace")
        try:
            while data and self.fd is not None:
                cut = len(data)
                if cut > PIPE_BUF:
                    nl = data.rfind(b"\n", 0, PIPE_BUF)
                    cut = nl + 1 if nl >= 0 else data.find(b"\n") + 1 or len(data)
                chunk, data = data[:cut], data[cut:]
                while chunk and self.fd is not None:
                    chunk = chunk[os.write(self.fd, chunk):]
        except OSError:
            self.fd = None  # the parent is gone; keep the script running undisturbed

    def json(self, obj: dict) -> None:
        self(json.dumps(obj, default=str))


def leave_hook(emit: Emitter):
    """The recorder's finish hook: the exit event, every buffer flushed, then os._exit. The
    stage ends here, on our terms: nothing of the user's or a framework's code (an
    `except KeyboardInterrupt:` that evaluates, a teardown that raises) runs after it. The
    parent ends the DataLoader workers with the process group right after."""

    def leave() -> None:
        emit.json({"e": "exit", "how": "stopped", "code": 0, "exc": None})
        emit.flush()
        lifeline.leave(0)

    return leave
