"""Keep the child's stdout.log / stderr.log bounded: the head and the tail, a note between.

`cap_log(path)` cuts a finished log once. `LogCapper(path).start()` keeps a log bounded
while a child process is still writing it, from a thread of the parent; `stop()` ends the
thread and makes the final cut.

Why cutting a file that a child is writing is safe: the child must write through a file
descriptor opened with O_APPEND (`open_log` makes one; pass it as the child's stdout or
stderr). With O_APPEND every write goes to the file's end *as it is at that moment*,
atomically, so after the capper shrinks the file the child's next line lands at the new
end. (Without O_APPEND, "wb", the child would keep writing at its old offset and the file
would grow back with a hole of NUL bytes: do not cap such a file live.) The capper itself
opens the file without O_APPEND and uses pread/pwrite/ftruncate; it rewrites
[head | note | tail] in place, picks up what the child appended while it worked, then
truncates. Bytes the child appends in the instant between that last read and the
truncate are lost (a window of two system calls); the note then undercounts by as much.

A live log can exceed head + tail by `slack` plus what the child writes in one `interval`;
after `stop()` (or `cap_log`) it holds at most head + tail bytes of the log plus the note.
Cuts fall at line ends where one is near, else at a UTF-8 character boundary.
"""

from __future__ import annotations

import os
import threading
from typing import BinaryIO

__all__ = ["LogCapper", "cap_log", "open_log"]

NOTE = "[loaderdoctor: {n} bytes cut here to keep this log small; its beginning and end are kept]\n"
_NOTE_ROOM = 256  # a file at most this much over head + tail is left alone (a note would not save much)


def open_log(path: str) -> BinaryIO:
    """A new empty log file opened for appending (O_APPEND), ready to hand to a child as stdout/stderr."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    return os.fdopen(fd, "ab", buffering=0)


def _head_cut(chunk: bytes, head_bytes: int) -> int:
    """Where the kept head ends: after the last newline in its second half, else at a
    character boundary near head_bytes (chunk holds a few bytes more to see one)."""
    nl = chunk.rfind(b"\n", 0, head_bytes)
    if nl >= head_bytes // 2:
        return nl + 1
    pos = head_bytes
    while pos > max(0, head_bytes - 3) and pos < len(chunk) and chunk[pos] & 0xC0 == 0x80:
        pos -= 1
    return pos


def _tail_skip(chunk: bytes) -> int:
    """How many leading bytes of the tail to drop: up to its first newline in the first
    half, else past UTF-8 continuation bytes."""
    nl = chunk.find(b"\n", 0, len(chunk) // 2)
    if nl >= 0:
        return nl + 1
    i = 0
    while i < min(3, len(chunk)) and chunk[i] & 0xC0 == 0x80:
        i += 1
    return i


class LogCapper:
    """Keeps one log file under head_bytes + tail_bytes (+ slack while live).

    `start()` runs `check()` every `interval` seconds in a daemon thread; `stop()` ends it
    and makes a final exact cut, returning {"cut_bytes": n} or None when nothing was cut.
    `check()` may also be called directly, without the thread.
    """

    def __init__(self, path: str, head_bytes: int = 1_000_000, tail_bytes: int = 1_000_000, *,
                 interval: float = 0.2, slack: int | None = None):
        self.path = path
        self.head_bytes = head_bytes
        self.tail_bytes = tail_bytes
        self.interval = interval
        self.slack = tail_bytes // 4 if slack is None else slack
        self.cut_bytes = 0  # bytes of the log removed so far
        self.cuts = 0  # how many times the file was cut
        self.error: str | None = None  # the last error a pass met (the thread never raises)
        self._head_end: int | None = None  # fixed at the first cut
        self._note_len = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LogCapper:
        self._thread = threading.Thread(target=self._run, name="loaderdoctor-logcap", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> dict | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.check(strict=True)
        except OSError as exc:
            self.error = str(exc)
        return {"cut_bytes": self.cut_bytes} if self.cut_bytes else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except OSError as exc:
                self.error = str(exc)

    def check(self, strict: bool = False) -> bool:
        """Cut the file if it is over its bound (plus slack unless strict); True if cut."""
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDWR)  # not O_APPEND: pwrite must write where it is told
            except FileNotFoundError:
                return False
            try:
                return self._cut(fd, strict)
            finally:
                os.close(fd)

    def _cut(self, fd: int, strict: bool) -> bool:
        size = os.fstat(fd).st_size
        first = self._head_end is None
        bound = (self.head_bytes + self.tail_bytes + _NOTE_ROOM if first
                 else self._head_end + self._note_len + self.tail_bytes)
        if size <= bound + (0 if strict else self.slack):
            return False
        head_end = _head_cut(os.pread(fd, self.head_bytes + 4, 0), self.head_bytes) if first else self._head_end
        start = size - self.tail_bytes
        tail = os.pread(fd, self.tail_bytes, start)
        skip = 0 if os.pread(fd, 1, start - 1) == b"\n" else _tail_skip(tail)
        start, tail = start + skip, tail[skip:]
        total = self.cut_bytes + (start - head_end - self._note_len)
        nl = b"" if head_end == 0 or os.pread(fd, 1, head_end - 1) == b"\n" else b"\n"
        note = nl + NOTE.format(n=total).encode()
        os.pwrite(fd, note + tail, head_end)
        # Copy down what the child appended meanwhile, then truncate at once: only bytes
        # appended between the last empty read and the truncate are lost.
        read_at, write_at = start + len(tail), head_end + len(note) + len(tail)
        for _ in range(64):
            more = os.pread(fd, 1 << 20, read_at)
            if not more:
                break
            os.pwrite(fd, more, write_at)
            read_at, write_at = read_at + len(more), write_at + len(more)
        os.ftruncate(fd, write_at)
        self._head_end, self._note_len, self.cut_bytes = head_end, len(note), total
        self.cuts += 1
        return True


def cap_log(path: str, head_bytes: int = 1_000_000, tail_bytes: int = 1_000_000) -> dict | None:
    """Rewrite a finished log in place as its first head_bytes, one note line saying how many
    bytes were cut, and its last tail_bytes. {"cut_bytes": n}, or None when the file is small
    enough (or missing). For a log that was capped live, use LogCapper.stop() instead."""
    capper = LogCapper(path, head_bytes, tail_bytes)
    return {"cut_bytes": capper.cut_bytes} if capper.check(strict=True) else None
