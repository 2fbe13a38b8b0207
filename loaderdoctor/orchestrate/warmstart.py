"""Warm starts for the stages after the baseline (the process side is child/warm.py).

Every stage is a fresh run of the user's script, and each paid the interpreter's start and
torch's import (1-2.7 s here), and the first optimizer's lazy import of torch._dynamo (~1.1
s), before the script's training: a third of a short stage, and most of the gap to a fast
verdict; a framework's import is as much again (Lightning or MONAI ~5 s here). After the
baseline, the stages are forked from one process that made those imports once (torch, the
installed packages the script imported after it up to its first DataLoader iterator, in
its order, up to the first module of its own, and torch's lazy parts), the way the
baseline shows the script made them:

- each under the environment the script had when it made it (variables it set before
  `import torch`, such as OMP_NUM_THREADS, read by the OpenMP runtime when torch loads it,
  are set in the warm process before its import, with the values the baseline reported);
- the compiled extensions the script loaded before torch (PIL, cv2, pandas imported first)
  are imported first, in the script's order (native load order); a lazy part that loads a
  package torch had not loaded only if everything the script had loaded before it is loaded
  in the warm process too;
- the same torch version as the baseline's; no Python thread started by the imports (a
  package's native thread pools, such as OpenBLAS's, are accepted: see _first_threaded);
- a plain script, one process (not a notebook's kernel, not torchrun's ranks), and a stage
  with no environment of its own.

Anything else, or a warm process that fails to start or to answer, and the stages start
cold as before. The baseline itself always starts cold: it is the user's real run.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

from loaderdoctor.protocol import PARENT_PID_ENV

READY_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 10.0


def _hello(baseline: dict) -> dict | None:
    return next((e for e in baseline.get("events") or [] if e.get("e") == "hello"), None)


def why_not(baseline: dict, kind: str, nproc: int | None) -> str | None:
    """Why the stages of this probe cannot start warm (None: they can, as far as the
    baseline shows; the warm process's own imports are checked when it is ready)."""
    if kind == "notebook":
        return "the target is a notebook (its stages run in a Jupyter kernel)"
    if nproc:
        return "a distributed run (torchrun starts the ranks)"
    hello = _hello(baseline)
    if hello is not None and hello.get("preloaded"):
        return "torch was loaded before the script started (a sitecustomize or .pth file)"
    if hello is None or hello.get("torch_import_s") is None or "before_torch" not in hello:
        return "the baseline did not import torch"
    return None


def plan(baseline: dict, env_values: dict) -> tuple[list[dict], str | None]:
    """The warm process's imports, in the order the script made them: torch, the installed
    packages the script imported after it up to its first loader (child/torchhook.PackageWatch),
    then each lazy part of torch the baseline imported (child/torchhook.py), each as
    {m, env: the variables the script had changed by then, with their values, before: the
    compiled extensions the script had loaded by then}. A step whose values did not arrive
    (`env_values`, from the baseline's "env" events) ends the plan; for torch itself, there is
    no plan: (steps, why not)."""
    hello = _hello(baseline) or {}
    events = baseline.get("events") or []
    items = [("torch", hello.get("before_torch") or {})]
    pk = next((ev for ev in events if ev.get("e") == "packages"), None) or {}
    packages = set(pk.get("names") or [])
    where = dict(zip(pk.get("names") or [], pk.get("where") or []))
    items += [(name, {"env": keys, "extensions": []}) for name, keys in zip(pk.get("names") or [], pk.get("env") or [])]
    items += [(ev.get("m"), ev["before"]) for ev in events if ev.get("e") == "import" and ev.get("before") is not None]
    steps: list[dict] = []
    for name, before in items:
        names = list(before.get("env") or [])
        values = env_values.get(name) or {}
        if set(names) - set(values):
            if not steps:
                return [], "the values of the variables the script set before importing torch did not arrive"
            break
        if name not in (s["m"] for s in steps):
            steps.append({"m": name, "env": {k: values[k] for k in names}, "before": list(before.get("extensions") or []),
                          "package": name in packages})
            if name in where:  # where the baseline found it: the warm process must find the same
                steps[-1]["where"] = where[name]
    return steps, None


def open_for(session, kind: str, opts, run_dir: str, env_values: dict | None = None,
             meanwhile: Callable[[], threading.Thread] | None = None) -> "WarmStart | None":
    """The warm process for this probe's stages after the baseline, or None (cold starts);
    what was decided and why goes into session.notes["warm_start"] (the names of the
    variables the script set first, never their values). `meanwhile` starts a thread of
    this process's own work while the warm process imports (no stage runs then); it is
    joined before this returns."""
    from loaderdoctor.orchestrate.supervise import base_env

    notes = session.notes.setdefault("warm_start", {})
    base = session.stage("baseline") or {}
    why = None if getattr(opts, "warm_start", True) else "turned off (--cold-starts)"
    why = why or why_not(base, kind, getattr(opts, "nproc_per_node", None))
    steps: list[dict] = []
    if why is None:
        steps, why = plan(base, env_values or {})
    warm = None
    if why is None:
        log = os.path.join(run_dir, "stages", "warm-start.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        torch_version = (_hello(base) or {}).get("torch")
        side = meanwhile() if meanwhile else None
        path = (getattr(session, "target", None) or {}).get("path")
        while warm is None:
            warm = WarmStart(base_env(), os.getcwd(), log, steps, os.path.dirname(os.path.abspath(path)) if path else None)
            why, late = warm.usable(torch_version, steps)
            if why is None and late:  # a lazy part would load a package ahead of the script's order: without it
                warm.close()
                warm, steps = None, [s for s in steps if s["m"] not in late]
            elif why is not None:
                warm.close()
                warm = None
                break
        if side is not None:  # done long before the warm process is ready; never into a stage's measurement
            side.join(timeout=30)
        notes["ready_s"] = round(warm.seconds, 3) if warm else None
        notes["preloaded"] = [s["m"] for s in steps] if warm else []
        notes["env_set_first"] = sorted({k for s in steps for k in s["env"]}) if warm else []
        notes["env_set_by_imports"] = list(warm.info.get("set_by_imports") or []) if warm else []
    notes.update(used=warm is not None, why=why)
    return warm


def _first_threaded(counts: list[dict], lazy_parts: set) -> str | None:
    """The first import after torch that started a Python thread (a thread of the
    interpreter would be lost in every fork, half-way through whatever it was doing) or
    initialised CUDA (a forked process cannot use it), or, for torch's own lazy parts, any
    thread. A package may start unnamed native threads: the idle pools of the BLAS libraries
    numpy, scipy and OpenCV bring (their load starts them), which stop for a fork and start
    again in the child, as in every DataLoader worker forked after those imports (torch's own
    import starts one of them: numpy's); a thread named otherwise than the process (grpc's,
    TensorFlow's) leaves its package out."""
    py, native, named = counts[0].get("threads", 1), counts[0].get("os_threads", 1), counts[0].get("named_threads", 0)
    for c in counts[1:]:
        if c.get("threads", 1) > py or c.get("cuda") or c.get("named_threads", 0) > named \
                or (c["m"] in lazy_parts and c.get("os_threads", 1) > native):
            return c["m"]
        py, native, named = c.get("threads", 1), c.get("os_threads", 1), c.get("named_threads", 0)
    return None


class Forked:
    """A runner forked by the warm process: the few things run_stage asks of a Popen."""

    def __init__(self, warm: "WarmStart", pid: int):
        self.warm = warm
        self.pid = pid
        self.adopter = warm.pid  # a subreaper: the run's orphans are its children (procs.end_run)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.warm.read_exit(self, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.warm.read_exit(self, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired("warm runner", timeout or 0)
        return self.returncode


class WarmStart:
    def __init__(self, env: dict, cwd: str, log_path: str, steps: list[dict] | None = None, path0: str | None = None):
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.buf = b""
        self.info: dict = {}
        self.failed: str | None = None
        self.seconds = 0.0
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(env)
        env[PARENT_PID_ENV] = str(os.getpid())
        t0 = time.monotonic()
        try:
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "loaderdoctor.child.warm", str(theirs.fileno())],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=cwd,
                    pass_fds=(theirs.fileno(),), start_new_session=True)
        except OSError as exc:
            self.failed = f"could not start: {exc}"
            ours.close()
            return
        finally:
            theirs.close()
        self.sock = ours
        try:  # the import plan goes through the socket: its values may be secrets (never argv)
            ours.sendall((json.dumps({"path0": path0, "steps": [
                {"m": s["m"], "env": s["env"], "pre": s["before"] if s["m"] == "torch" else [], "where": s.get("where")}
                for s in steps or []]}) + "\n").encode())
        except OSError:
            pass
        try:
            msg = self._read(READY_TIMEOUT_S)
        except BaseException:  # Ctrl-C while it imports: it is ended here, not left to the death signal
            self.close()
            raise
        self.seconds = time.monotonic() - t0
        self.info = msg or {}
        if not self.info.get("ready"):
            self._fail(f"could not import {self.info['failed_step']} ({self.info.get('error')})"
                       if self.info.get("failed_step") else "did not become ready")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # ---- the line protocol

    def _read(self, timeout: float | None) -> dict | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.sock is None:
                return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self._fail("ended")
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return {}

    def _read_for(self, wanted, timeout: float | None) -> dict | None:
        """The next message `wanted(msg)` accepts, within timeout; others are passed over (a
        stage's exit status that came after its stage was given up on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            msg = self._read(left)
            if msg is None or wanted(msg):
                return msg

    def _fail(self, why: str) -> None:
        self.failed = self.failed or why
        self.close()

    # ---- what run_stage uses

    def usable(self, baseline_torch: str | None, steps: list[dict]) -> tuple[str | None, list[str]]:
        """(why this warm process cannot stand for a cold start, or None; the lazy parts to
        start again without: one that loaded a package torch had not loaded, where the script
        had loaded a compiled extension first that this process lacks, or one that started
        threads)."""
        info = self.info
        lazy = [s["m"] for s in steps if s["m"] != "torch"]
        failed_step = info.get("failed_step")
        if failed_step in lazy:  # a lazy part that would not import there: start again without it and what follows
            return None, lazy[lazy.index(failed_step):]
        if self.failed:
            return f"the warm process {self.failed}", []
        if baseline_torch and info.get("torch") != baseline_torch:
            return f"the warm process has torch {info.get('torch')}, the baseline {baseline_torch}", []
        counts = info.get("steps") or [{"m": "torch", "threads": info.get("threads", 1),
                                        "os_threads": info.get("torch_os_threads", 1)}]
        if counts[0].get("threads", 1) != 1:
            return "the warm process has threads of its own after importing torch (unsafe to fork)", []
        if counts[0].get("cuda"):
            return "importing torch initialised CUDA in the warm process (a forked stage could not use it)", []
        starts = _first_threaded(counts, set(lazy) - {s["m"] for s in steps if s.get("package")})
        if starts is not None:  # that import started threads: start again without it and what follows
            return None, lazy[lazy.index(starts):]
        have, with_torch = set(info.get("extensions") or []), set(info.get("torch_extensions") or [])
        first = next((s for s in steps if s["m"] == "torch"), {"before": []})
        extra = sorted(set(first["before"]) - with_torch)
        if extra:
            return ("the script loads compiled extensions before torch (" + ", ".join(extra[:5])
                    + "): their load order is kept by cold starts"), []
        torch_pkgs = {m.partition(".")[0] for m in with_torch}
        late = []
        for s in steps:
            new_pkgs = {m.partition(".")[0] for m in (info.get("new") or {}).get(s["m"], [])} - torch_pkgs
            if s["m"] != "torch" and new_pkgs and set(s["before"]) - have:
                late.append(s["m"])
        return None, late

    def start(self, spec_path: str, env: dict, cwd: str, event_w: int, out, err) -> Forked | None:
        """Fork a runner for one stage; None (and no further use) if the warm process fails."""
        if self.sock is None:
            return None
        data = (json.dumps({"spec": spec_path, "env": env, "cwd": cwd}) + "\n").encode()
        try:
            sent = socket.send_fds(self.sock, [data], [event_w, out.fileno(), err.fileno()])
            if sent < len(data):
                self.sock.sendall(data[sent:])
        except OSError as exc:
            self._fail(f"could not be reached ({exc})")
            return None
        msg = self._read_for(lambda m: "exit" not in m, ANSWER_TIMEOUT_S)
        if not msg or not msg.get("pid"):
            self._fail("did not fork a runner" + (f": {msg.get('error')}" if msg else ""))
            return None
        return Forked(self, int(msg["pid"]))

    def read_exit(self, run: Forked, timeout: float | None) -> None:
        msg = self._read_for(lambda m: m.get("pid") == run.pid and "exit" in m, timeout)
        if msg is not None:
            run.returncode = int(msg["exit"])
        elif self.sock is None and run.returncode is None:  # the warm process is gone, and its runner with it
            run.returncode = -signal.SIGKILL

    def close(self) -> None:
        """End the warm process (and any runner it still has: they die with it)."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
