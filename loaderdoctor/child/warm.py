"""A warm start: one process that has imported torch and the runner, forked for each stage.

`python -m loaderdoctor.child.warm FD`: FD is this end of a Unix socket pair with the parent
(orchestrate/warmstart.py). Its first line is the import plan: torch (after the compiled
extensions the script loaded before it, in its order), the installed packages the script
imported next, and the lazy parts of torch the baseline imported, each with the environment
variables the script had set by then (with their values: that is why it comes through the
socket, not the command line). It makes those imports once, each under that environment,
says what they loaded, and then,
per request (a JSON line with the stage's spec path, environment and working directory,
and three file descriptors: the event pipe, stdout, stderr), forks a runner: a new
session, the stage's files on fds 1 and 2, the stage's exact environment and directory,
then the runner's own main(), which ends with os._exit and never comes back here. The
runner finds torch loaded (child/torchhook.py: hooks in at once) and skips the import
every cold stage pays (1-2.7 s here). This process reports the runner's pid at once and
its exit status once it has ended, and serves one stage at a time.

It dies with the parent (the kernel's parent-death signal); each runner it forked dies with
it the same way. It is a child subreaper: a stage's processes orphaned on the way (a forked
process's environment is its exec's, so the run's id cannot find them) become its children,
where the parent's end of the stage finds them. It never runs the user's code itself.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

from loaderdoctor import lifeline
from loaderdoctor.protocol import EVENT_FD_ENV, PARENT_PID_ENV

MAX_FDS = 3


def _send(sock: socket.socket, msg: dict) -> None:
    sock.sendall((json.dumps(msg) + "\n").encode())


def _child(req: dict, fds: list[int], sock: socket.socket, by_imports: dict) -> None:
    """In the forked runner: become what a cold `python -m loaderdoctor.child.runner` would be:
    the stage's environment, plus what the preloaded imports set in it (MONAI sets
    CUBLAS_WORKSPACE_CONFIG, Lightning PYTORCH_NVML_BASED_CUDA_CHECK when imported): the
    script's own imports of them are no-ops here, so the variables are set here as a cold run's
    imports would set them."""
    try:
        sock.close()
        os.setsid()
        event_fd, out, err = fds
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (null, out, err):
            os.close(fd)
        os.environ.clear()
        os.environ.update(req["env"])
        for k, v in by_imports.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.environ[EVENT_FD_ENV] = str(event_fd)
        os.chdir(req["cwd"])
        np = sys.modules.get("numpy")
        if np is not None:  # a fresh process seeds numpy's global generator from the OS (random reseeds itself)
            np.random.seed()
        from loaderdoctor.child import runner

        sys.argv = [runner.__file__, req["spec"]]
        runner.main([req["spec"]])
    except BaseException as exc:  # never back into the server loop
        try:
            os.write(2, f"loaderdoctor: the warm start could not run the stage: {exc!r}\n".encode())
        except OSError:
            pass
    os._exit(1)


def serve(sock: socket.socket, by_imports: dict | None = None) -> None:
    buf, fds = b"", []
    while True:
        data, got, _flags, _addr = socket.recv_fds(sock, 1 << 16, MAX_FDS)
        fds += got
        if not data:
            return  # the parent closed its end: done
        buf += data
        if not buf.endswith(b"\n"):
            continue
        req, buf = json.loads(buf), b""
        if len(fds) != MAX_FDS:
            for fd in fds:
                os.close(fd)
            fds = []
            _send(sock, {"error": f"expected {MAX_FDS} descriptors"})
            continue
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        _reap()
        pid = os.fork()
        if pid == 0:
            _child(req, fds, sock, by_imports or {})
        for fd in fds:
            os.close(fd)
        fds = []
        _send(sock, {"pid": pid})
        while True:  # the runner, and any orphan of its tree this process adopted on the way
            done, status = os.waitpid(-1, 0)
            if done == pid:
                break
        _reap()
        _send(sock, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def _reap() -> None:
    """Collect adopted orphans that have ended (the next stage's end collects the rest)."""
    while True:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if done == 0:
            return


def _read_plan(sock: socket.socket) -> tuple[list[dict], str | None]:
    buf = b""
    while not buf.endswith(b"\n"):
        data = sock.recv(1 << 16)
        if not data:
            os._exit(0)
        buf += data
    msg = json.loads(buf)
    steps = msg.get("steps") or []
    return (steps if steps and steps[0].get("m") == "torch" else [{"m": "torch", "env": {}}, *steps]), msg.get("path0")


def _cuda_initialized() -> bool:
    """Whether an import initialised CUDA here (a forked stage could not use it then)."""
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:
        return False


def _named_threads() -> int:
    """Native threads named otherwise than the process (grpc, TensorFlow, a server's pool name
    theirs; the BLAS pools numpy, scipy and OpenCV start when loaded do not)."""
    try:
        tasks = os.listdir("/proc/self/task")
        with open("/proc/self/comm") as f:
            own = f.read().strip()
        named = 0
        for t in tasks:
            with open(f"/proc/self/task/{t}/comm") as f:
                named += f.read().strip() != own
        return named
    except OSError:
        return 0


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    lifeline.die_with_parent()
    lifeline.become_subreaper()  # a stage's orphans stay in reach (procs.end_run) instead of going to init
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and os.getppid() != int(parent):
        os._exit(1)
    sock = socket.socket(fileno=int(argv[0]))
    import importlib

    plan, path0 = _read_plan(sock)
    if path0 and sys.path:  # the script's folder, where the runner puts it (`-m` put the working directory)
        sys.path[0] = path0
    launch = dict(os.environ)
    new: dict[str, list[str]] = {}
    torch_exts: list[str] = []
    torch_threads = 1
    counts: list[dict] = []  # the threads after each import (orchestrate/warmstart.py decides)
    by_imports: dict[str, str | None] = {}  # variables the imports themselves set (None: removed)
    for step in plan:  # torch, then its lazy parts, each under the environment the script had then
        os.environ.clear()
        os.environ.update(launch)
        for k, v in (step.get("env") or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from loaderdoctor.child import torchhook

        given = dict(os.environ)
        try:
            for name in step.get("pre") or []:  # what the script loaded before torch, in its order
                importlib.import_module(name)
            before = set(torchhook.loaded_extensions())
            mod = importlib.import_module(step["m"])
            if step.get("where") and torchhook.module_location(mod) != step["where"]:
                raise ImportError(f"found at {torchhook.module_location(mod)}, the baseline's at {step['where']}")
        except BaseException as exc:  # the baseline imported it: say so and leave, the parent starts again without it
            _send(sock, {"ready": False, "failed_step": step["m"], "error": repr(exc)[:500]})
            os._exit(1)
        new[step["m"]] = sorted(set(torchhook.loaded_extensions()) - before)
        now = dict(os.environ)
        by_imports.update({k: now.get(k) for k in set(given) | set(now) if given.get(k) != now.get(k)})
        counts.append({"m": step["m"], "threads": threading.active_count(), "os_threads": _os_threads(),
                       "named_threads": _named_threads(), "cuda": _cuda_initialized()})
        if step["m"] == "torch":
            torch_exts = torchhook.loaded_extensions()
            torch_threads = _os_threads()  # torch's own (a BLAS pool): a DataLoader fork worker is forked with it too
    os.environ.clear()
    os.environ.update(launch)
    import torch

    from loaderdoctor.child import patches, recorder, runner, torchhook  # noqa: F401  (ours too)

    _send(sock, {"ready": True, "pid": os.getpid(), "torch": torch.__version__,
                 "extensions": torchhook.loaded_extensions(), "torch_extensions": torch_exts, "new": new,
                 "threads": threading.active_count(), "os_threads": _os_threads(), "torch_os_threads": torch_threads,
                 "preloaded": [s["m"] for s in plan], "steps": counts, "set_by_imports": sorted(by_imports)})
    try:
        serve(sock, by_imports)
    except (OSError, ValueError):
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
