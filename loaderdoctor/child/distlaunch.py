"""A distributed stage's child: `python -m loaderdoctor.child.distlaunch N SPEC.json`.

This process becomes torchrun's agent: it calls torch.distributed.run's own main with
`--nproc_per_node N --standalone -m loaderdoctor.child.runner SPEC.json`, so rendezvous
(c10d on localhost: no network needed), the ranks' environment and restarts are torch's
own, and every rank runs the script under the runner's hooks.

The event channel. torch starts each rank with subprocess.Popen's default close_fds=True
and in a session of its own, so the pipe loaderdoctor hands its child cannot reach the
ranks. Each local rank writes instead to a FIFO of its own (events/rank-<local>.fifo in the
stage directory) and one relay thread here per FIFO copies whole lines onto the inherited
pipe, under one lock: two ranks' lines never interleave, whatever their length, and a rank
restarted by torch opens its FIFO again. The parent reads one pipe, as for a single process;
each event carries the rank that wrote it (the runner's Emitter tags it).

Lifelines: this process dies with loaderdoctor (PR_SET_PDEATHSIG, parent check); the ranks'
runners die with this process (their own PR_SET_PDEATHSIG, and LOADERDOCTOR_PARENT now names
this process); their DataLoader workers watch their rank.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from loaderdoctor import lifeline
from loaderdoctor.protocol import (
    EVENT_DIR_ENV,
    EVENT_FD_ENV,
    PARENT_PID_ENV,
    RunnerSpec,
)


def fifo_path(event_dir: str, local_rank: int) -> str:
    return os.path.join(event_dir, f"rank-{local_rank}.fifo")


def _write_all(fd: int, data: bytes) -> bool:
    try:
        while data:
            data = data[os.write(fd, data):]
        return True
    except OSError:  # loaderdoctor is gone: this process dies with it
        return False


def relay(path: str, out_fd: int, lock: threading.Lock) -> None:
    """Copy whole lines from one rank's FIFO to the shared pipe, for the life of this process.
    A torn last line (a rank killed mid-write) is dropped."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)  # waits for the rank to open it for writing
        except OSError:
            return
        tail = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            tail += chunk
            cut = tail.rfind(b"\n") + 1
            if cut:
                with lock:
                    if not _write_all(out_fd, tail[:cut]):
                        os.close(fd)
                        return
                tail = tail[cut:]
        os.close(fd)


def start_relays(event_dir: str, nproc: int, out_fd: int) -> list[threading.Thread]:
    os.makedirs(event_dir, exist_ok=True)
    lock = threading.Lock()
    threads = []
    for k in range(nproc):
        path = fifo_path(event_dir, k)
        if not os.path.exists(path):
            os.mkfifo(path, 0o600)
        t = threading.Thread(target=relay, args=(path, out_fd, lock), name=f"loaderdoctor-relay-{k}", daemon=True)
        t.start()
        threads.append(t)
    return threads


def torchrun_args(nproc: int, spec_path: str) -> list[str]:
    return ["--nproc_per_node", str(nproc), "--standalone", "-m", "loaderdoctor.child.runner", spec_path]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    lifeline.die_with_parent()
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and os.getppid() != int(parent):  # loaderdoctor died before the death signal was set
        os._exit(1)
    nproc, spec_path = int(argv[0]), argv[1]
    spec = RunnerSpec.load(spec_path)
    from torch.distributed import run as torchrun

    fd = os.environ.pop(EVENT_FD_ENV, None)  # a rank must never write to a number that is not our pipe
    event_dir = os.path.join(spec.stage_dir, "events")
    if fd is not None:
        start_relays(event_dir, nproc, int(fd))
        # progress: torch's launcher is imported and the ranks are about to start
        _write_all(int(fd), (json.dumps({"e": "launch", "pid": os.getpid(), "nproc": nproc}) + "\n").encode())
    os.environ[EVENT_DIR_ENV] = event_dir
    os.environ[PARENT_PID_ENV] = str(os.getpid())
    code = 0
    try:
        torchrun.main(torchrun_args(nproc, spec_path))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # a rank failed (ChildFailedError) or a signal: torch said which on stderr
        code = 1
    lifeline.leave(code)


if __name__ == "__main__":
    main()
