"""Per-fetch events written by the DataLoader workers themselves (protocol.py has the shapes).

  wf  one fetch (a batch, or a sample without auto-collation) finished in a worker:
      l (loader), w (worker id), pid, t0/t1 (s on the recorder's clock), i (the batch's index
      in its iterator, or null), n (samples asked), tr (the transform that took most of it,
      timed in the transforms stage only, else null)
  wx  an IterableDataset's stream ended in a worker: l, w, pid, n (batches it delivered in
      this iterator), t
  wh  a digest of one of the first HASHED batches a worker's IterableDataset stream yielded:
      l, w, pid, k (0-based), h (hex): identical digests across workers = the same stream

Why the workers write to the runner's event pipe themselves: a write of at most PIPE_BUF
bytes to a pipe is atomic, so lines from several processes never interleave when every
writer writes whole lines in chunks of at most PIPE_BUF (emitter.Emitter does, and so does
WorkerEvents.flush). A forked worker inherits the pipe's descriptor; a spawn/forkserver
worker opens the same pipe through /proc/<runner pid>/fd/<fd>. Either way the descriptor is
checked (device and inode of the pipe) before anything is written, so nothing is ever
written into a descriptor the worker reuses for something else.

Cost per fetch: two clock reads, one frame-locals lookup and one formatted line appended to
a list; a write every FLUSH_S (or 3.5 KB) per worker. The clock is time.perf_counter, the
same CLOCK_MONOTONIC in every process, so t0/t1 compare with the runner's "b" events."""

from __future__ import annotations

import hashlib
import os
import select
import stat
import sys
import time
from typing import Any

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
FLUSH_S = 0.1  # a worker's lines are written at most this late
CHUNK = min(PIPE_BUF, 4096) - 256  # flush before a buffer could exceed one atomic write
MAX_EVENTS = 20_000  # per worker process: a bound on what one stage records
HASHED = 3  # an IterableDataset worker's first batches digested (iterable-duplicates)


def channel_of(emit: Any) -> dict | None:
    """What a worker needs to find the runner's event pipe: its descriptor and identity."""
    fd = getattr(emit, "fd", None)
    if not isinstance(fd, int):
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if not stat.S_ISFIFO(st.st_mode):
        return None
    return {"fd": fd, "dev": st.st_dev, "ino": st.st_ino, "pid": os.getpid()}


def _same(fd: int, ch: dict) -> bool:
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISFIFO(st.st_mode) and st.st_dev == ch["dev"] and st.st_ino == ch["ino"]


def open_channel(ch: dict) -> int | None:
    """This process's descriptor for the runner's pipe, or None (never a wrong one)."""
    if _same(ch["fd"], ch):
        return ch["fd"]  # inherited through fork
    try:
        fd = os.open(f"/proc/{ch['pid']}/fd/{ch['fd']}", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if _same(fd, ch):
        return fd
    os.close(fd)
    return None


def digest(batch: Any, limit: int = 4096) -> str:
    """A cheap digest of a batch: shapes and the first `limit` bytes of each tensor/array,
    repr of anything else (at most 16 leaves)."""
    h = hashlib.blake2b(digest_size=8)
    stack, leaves = [batch], 0
    while stack and leaves < 16:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(reversed(x))
            continue
        if isinstance(x, dict):
            stack.extend(x[k] for k in reversed(list(x)))
            continue
        leaves += 1
        shape = getattr(x, "shape", None)
        if shape is not None and hasattr(x, "dtype"):
            h.update(repr((tuple(shape), str(x.dtype))).encode())
            try:
                flat = x.reshape(-1)[: max(1, limit // max(1, getattr(x, "itemsize", 0) or x.element_size()))]
                h.update(bytes(memoryview(flat.numpy() if hasattr(flat, "numpy") else flat).cast("B")))
            except Exception:
                h.update(repr(x)[:limit].encode("utf-8", "replace"))
        else:
            h.update(repr(x)[:limit].encode("utf-8", "replace"))
    return h.hexdigest()


class WorkerEvents:
    """One worker process's buffer of events, written in whole lines of at most PIPE_BUF."""

    def __init__(self, fd: int, t0: float, site: int, worker_id: int, clock=time.perf_counter):
        self.fd: int | None = fd
        self.t0 = t0
        self.site = site
        self.wid = worker_id
        self.pid = os.getpid()
        self.clock = clock
        self.lines: list[str] = []
        self.size = 0
        self.flushed_at = float("-inf")
        self.count = 0
        self.names: list[str] = []  # the timed pipeline's step names (transforms stage)

    def _add(self, line: str, now: float, urgent: bool = False) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        if urgent or self.size >= CHUNK or now - self.flushed_at >= FLUSH_S:
            self.flushed_at = now
            self.flush()

    def fetched(self, t0: float, t1: float, i: Any, n: int, tr: str | None) -> None:
        self.count += 1
        if self.count > MAX_EVENTS:
            return
        tr_s = "null" if tr is None else '"' + tr.replace("\\", "").replace('"', "")[:80] + '"'
        i_s = str(i) if type(i) is int else "null"
        self._add(f'{{"e":"wf","l":{self.site},"w":{self.wid},"pid":{self.pid},"t0":{t0 - self.t0:.6f},'
                  f'"t1":{t1 - self.t0:.6f},"i":{i_s},"n":{n},"tr":{tr_s}}}', t1)

    def exhausted(self, delivered: int, now: float) -> None:
        self._add(f'{{"e":"wx","l":{self.site},"w":{self.wid},"pid":{self.pid},"n":{delivered},'
                  f'"t":{now - self.t0:.6f}}}', now, urgent=True)

    def hashed(self, k: int, h: str, now: float) -> None:
        self._add(f'{{"e":"wh","l":{self.site},"w":{self.wid},"pid":{self.pid},"k":{k},"h":"{h}"}}', now)

    def flush(self) -> None:
        """Whole lines, each write at most PIPE_BUF bytes (atomic on a pipe)."""
        lines, self.lines, self.size = self.lines, [], 0
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            b = line.encode("utf-8", "replace") + b"\n"
            if chunk and size + len(b) > PIPE_BUF:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(b)
            size += len(b)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        if self.fd is None or len(data) > PIPE_BUF:  # a line that long would not be atomic: dropped
            return
        try:
            os.write(self.fd, data)
        except OSError:
            self.fd = None  # the runner is gone: the worker carries on undisturbed


_STATE: WorkerEvents | None = None


def _batch_index() -> Any:
    """The batch's index in its iterator: torch's _worker_loop holds it as `idx` (feature-
    detected: None where the loop or the name differs)."""
    try:
        f = sys._getframe(2)
        for _ in range(3):  # another wrapper of fetch (the transforms stage's timing) may sit between
            if f is None or f.f_code.co_name == "_worker_loop":
                break
            f = f.f_back
        return f.f_locals.get("idx") if f is not None else None
    except (ValueError, AttributeError):
        return None


def _slowest_transform(before: list[float] | None) -> str | None:
    if before is None:
        return None
    from loaderdoctor.child import pipeline

    stats, names = pipeline._STATS, pipeline._NAMES
    if stats is None or not names or len(stats.total) != len(before):
        return None
    deltas = [a - b for a, b in zip(stats.total, before)]
    k = max(range(len(deltas)), key=deltas.__getitem__)
    return names[k] if deltas[k] > 0 and k < len(names) else None


def _totals() -> list[float] | None:
    mod = sys.modules.get("loaderdoctor.child.pipeline")
    stats = getattr(mod, "_STATS", None) if mod is not None else None
    return list(stats.total) if stats is not None and stats.total else None


def _wrap(orig, iterable: bool):
    clock = time.perf_counter

    def fetch(self, possibly_batched_index):
        st = _STATE
        if st is None:
            return orig(self, possibly_batched_index)
        before = _totals()
        t0 = clock()
        try:
            data = orig(self, possibly_batched_index)
        except StopIteration:
            if iterable:
                st.exhausted(getattr(self, "_ld_n", 0), clock())
            raise
        t1 = clock()
        n = len(possibly_batched_index) if hasattr(possibly_batched_index, "__len__") else 1
        k = getattr(self, "_ld_n", 0)
        self._ld_n = k + 1
        st.fetched(t0, t1, _batch_index(), n, _slowest_transform(before))
        if iterable and k < HASHED:
            st.hashed(k, digest(data), t1)
        return data

    fetch._ld_wf_orig = orig
    return fetch


def _patch_fetchers() -> None:
    from torch.utils.data._utils import fetch as fetch_mod

    for name, iterable in (("_MapDatasetFetcher", False), ("_IterableDatasetFetcher", True)):
        cls = getattr(fetch_mod, name, None)
        if cls is None or getattr(cls.fetch, "_ld_wf_orig", None) is not None:
            continue
        cls.fetch = _wrap(cls.fetch, iterable)


def install_in_worker(spec: dict, worker_id: int) -> bool:
    """In a DataLoader worker (from the chained worker_init_fn): find the event pipe and
    record every fetch of this process. spec: {"channel", "t0", "site"}."""
    global _STATE
    fd = open_channel(spec["channel"])
    if fd is None:
        return False
    _STATE = WorkerEvents(fd, spec["t0"], spec["site"], worker_id)
    _patch_fetchers()
    try:  # a worker that ends its loop normally writes what it holds
        from multiprocessing import util

        util.Finalize(None, _STATE.flush, exitpriority=100)
    except Exception:
        pass
    return True
