"""In the user's own process: a live DataLoader, probed without risking a hang.

    from loaderdoctor import assert_loader_healthy, probe
    assert_loader_healthy(loader, batches=5, timeout=30)   # in a test suite
    probe(loader)                                          # in a notebook: shows a table inline

Batches are drawn on a helper thread while the caller waits with a deadline. On a stall,
the workers' stacks are taken (py-spy, or faulthandler armed through the chained
worker_init_fn) before the workers are ended; the kernel or test session survives.
"""

from __future__ import annotations

import html
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback

from loaderdoctor.analysis.culprits import find_culprit, own_frames
from loaderdoctor.child.describe import count_samples, loader_config
from loaderdoctor.child.worker import ChainedWorkerInit
from loaderdoctor.frames import ProcessStack, ThreadStack
from loaderdoctor.observe import stacks as stackcap
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


def _drive(loader, batches: int, timeout: float, stack_method: str) -> dict:
    """Draw up to `batches` batches, each within `timeout` seconds. Returns what happened:
    status ok | hang | crash, per-batch waits, and on a hang the culprit and stacks."""
    stack_dir = tempfile.mkdtemp(prefix="loaderdoctor-")
    old_init = loader.worker_init_fn
    loader.worker_init_fn = ChainedWorkerInit(old_init, stack_dir)
    state: dict = {"n": 0, "error": None, "it": None, "waits": [], "samples": 0, "t_first": None}
    progress, done = threading.Event(), threading.Event()
    t_start = time.perf_counter()

    def draw() -> None:
        try:
            it = state["it"] = iter(loader)
            progress.set()
            for _ in range(batches):
                t0 = time.perf_counter()
                batch = next(it)
                t1 = time.perf_counter()
                if state["t_first"] is None:
                    state["t_first"] = t1 - t_start
                else:
                    state["waits"].append(t1 - t0)
                state["samples"] += count_samples(batch)
                state["n"] += 1
                progress.set()
        except StopIteration:
            pass
        except BaseException as exc:  # reported to the caller
            state["error"] = exc
        finally:
            done.set()
            progress.set()

    t = threading.Thread(target=draw, name="loaderdoctor-draw", daemon=True)
    try:
        t.start()
        while not done.is_set():
            progress.clear()
            if done.is_set():
                break
            if not progress.wait(timeout):
                return {**state, "status": "hang", **_stalled(loader, state, t, timeout, stack_dir, stack_method)}
        if state["error"] is not None:
            return {**state, "status": "crash"}
        return {**state, "status": "ok"}
    finally:
        loader.worker_init_fn = old_init
        shutil.rmtree(stack_dir, ignore_errors=True)
        if done.is_set():  # ended here, not left to the garbage collector (an error's traceback holds it)
            _close(state["it"])
        state["it"] = None


def _close(it) -> None:
    """The workers of an iterator that finished or failed: shut down as torch does, or ended."""
    if it is None:
        return
    try:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
    except Exception:
        _end_workers(it)


def _stalled(loader, state, thread, timeout, stack_dir, stack_method) -> dict:
    it = state["it"]
    workers = [w.pid for w in (getattr(it, "_workers", None) or []) if w.pid]
    _, stacks, _ = stackcap.capture_stacks({pid: "worker" for pid in workers}, stack_dir, stack_method)
    me = ProcessStack(os.getpid(), "main", [ThreadStack("MainThread", _thread_frames(thread))])
    stacks.insert(0, me)
    culprit = find_culprit(stacks)
    _end_workers(it)
    lines = [f"the DataLoader produced no batch for {timeout:g} s (after {state['n']} batches)."]
    lines.append(f"Culprit: {frame_line(culprit)} in the {culprit['role']} (pid {culprit['pid']})" if culprit
                 else "Culprit: no frame in your own code was found.")
    for ps in stacks:
        lines.append(f"{ps.role} pid {ps.pid}:")
        for th in ps.threads[:1] if ps.role == "main" else ps.threads:
            for f in own_frames(th.frames)[:8]:
                lines.append(f"    {frame_line(f)}")
    if not workers:
        lines.append("(num_workers=0: the stuck read runs on a helper thread that cannot be ended; it is left "
                     "blocked as a daemon thread)")
    return {"culprit": culprit, "stacks": stacks, "message": "\n".join(lines)}


def assert_loader_healthy(loader, batches: int = 5, timeout: float = 30.0, stack_method: str = "auto") -> int:
    """Draw `batches` batches within `timeout` seconds each, or fail with the culprit frame and
    every worker's stack. Returns the number of batches drawn."""
    res = _drive(loader, batches, timeout, stack_method)
    if res["status"] == "hang":
        raise LoaderUnhealthy(res["message"], res["culprit"], res["stacks"])
    if res["status"] == "crash":
        exc = res["error"]
        raise LoaderUnhealthy(f"the DataLoader failed after {res['n']} batches: {type(exc).__name__}: {exc}") from exc
    return res["n"]


class LiveReport:
    """What `probe(loader)` measured; shows itself as a table in a notebook."""

    def __init__(self, res: dict, config: dict, timeout: float):
        self.status = res["status"]
        self.batches = res["n"]
        waits = res["waits"]
        total = sum(waits)
        per = res["samples"] / max(res["n"], 1)
        self.samples_per_s = round(per * len(waits) / total, 2) if total > 0 else None
        self.first_batch_s = round(res["t_first"], 4) if res["t_first"] is not None else None
        self.wait_median_s = round(statistics.median(waits), 5) if waits else None
        self.wait_p90_s = round(sorted(waits)[int(0.9 * (len(waits) - 1))], 5) if waits else None
        self.config = config
        self.culprit = res.get("culprit")
        err = res.get("error")
        self.error = f"{type(err).__name__}: {err}" if err is not None else None
        self.message = res.get("message") or self.error or ""
        self.timeout = timeout

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def __repr__(self) -> str:
        return (f"<loaderdoctor live probe: {self.status}, {self.batches} batches, {self.samples_per_s} samples/s, "
                f"first batch {self.first_batch_s} s>")

    def _repr_html_(self) -> str:
        e = html.escape
        rows = [("status", self.status), ("batches drawn", self.batches), ("samples/s (after the first)",
                self.samples_per_s), ("first batch (s)", self.first_batch_s), ("wait median (s)", self.wait_median_s),
                ("wait p90 (s)", self.wait_p90_s)]
        rows += [(f"loader: {k}", self.config.get(k)) for k in ("num_workers", "batch_size", "start_method",
                                                                "persistent_workers", "pin_memory", "dataset")]
        body = "".join(f"<tr><th style='text-align:left'>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
        extra = f"<pre>{e(self.message)}</pre>" if self.status != "ok" else ""
        return f"<div class='loaderdoctor'><b>loaderdoctor live probe</b><table>{body}</table>{extra}</div>"


def probe(loader, batches: int = 30, timeout: float = 30.0, stack_method: str = "auto") -> LiveReport:
    """Probe a live DataLoader in this process (e.g. a notebook's kernel) without risking
    it: bounded waits; on a stall, worker stacks first, then the workers are ended."""
    try:
        config = loader_config(loader)
    except Exception as exc:
        config = {"error": str(exc)}
    return LiveReport(_drive(loader, batches, timeout, stack_method), config, timeout)
