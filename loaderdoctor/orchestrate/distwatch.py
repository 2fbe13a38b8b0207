"""What the parent knows of a running distributed stage (every rank's events arrive on one
pipe, each tagged with its rank: child/distlaunch.py), and how the stage's outcome is read.

Progress. The job is hung when no rank makes progress: any event from any rank resets the
watchdog (in a collective job one stuck rank stops every other at its next all-reduce, so
all fall silent together). The first-batch allowance holds while any rank still waits for
its first batch.

The end, on our terms. Each rank's recorder stops itself after the measured steps (os._exit
after flushing). In a lock-step job the others reach the same step a moment later; a rank
still inside a collective when a peer has left would fail or block there, which is neither
a crash nor a hang of the user's: once one rank said "stopped", the stage waits at most
RANKS_GRACE_S for the others' exits, ignores what they say after it, and the parent ends the
launcher's whole tree. A rank that fails on its own (an exception, sys.exit(n)) ends the
stage when torch's agent has ended the rest, or after FAIL_GRACE_S.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from typing import Callable

from loaderdoctor.analysis.distculprit import dist_culprit

RANKS_GRACE_S = 1.0
FAIL_GRACE_S = 5.0


def _failing(ev: dict) -> bool:
    return ev.get("how") == "exception" or (ev.get("how") == "sysexit" and bool(ev.get("code")))


class DistWatch:
    """supervise._Watch's interface (attributes read by the watchdog loop and the sampler),
    for a job of `nproc` ranks."""

    def __init__(self, clock: Callable[[], float], on_event: Callable[[dict], None] | None, nproc: int):
        self.clock = clock
        self.on_event = on_event
        self.nproc = nproc
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.last = clock()
        self.waiting: set = {"start"}  # ranks waiting for a first batch ("start": none has one yet)
        self.waiting_first = True
        self.stop_at: float | None = None
        self.workers: set[int] = set()
        self.main_pid: int | None = None  # rank 0's (the sampler's "main")
        self.mains: dict[int, int | None] = {}  # pid -> rank
        self.worker_of: dict[int, tuple[int | None, int]] = {}  # pid -> (rank, worker index)
        self.exits: dict = {}  # rank -> its first exit event
        self.first_stop: float | None = None
        self.first_fail: float | None = None
        self.b_first: float | None = None
        self.b_last: float | None = None
        self.checked_at = float("-inf")  # last early-hang stack check (orchestrate/hangwatch)
        self.same_stall = False
        self.worker_death_at: float | None = None  # when a dead DataLoader worker was first seen

    def handle(self, ev: dict) -> None:
        now = self.clock()
        kind, rank = ev.get("e"), ev.get("rank")
        if kind == "env":  # values a script set (maybe secrets): never recorded (ranks do not send them)
            return
        with self.lock:
            self.events.append(ev)
            self.last = now
            if kind == "hello":
                self.mains[ev.get("pid")] = rank
                if self.main_pid is None or rank == 0:
                    self.main_pid = ev.get("pid")
            elif kind == "it":
                self.waiting.add(rank)
                for k, pid in enumerate(ev.get("workers") or []):
                    if pid:
                        self.workers.add(pid)
                        self.worker_of[pid] = (rank, k)
            elif kind == "b":
                self.waiting.discard("start")
                self.waiting.discard(rank)
                self.b_first = self.b_first or now
                self.b_last = now
            elif kind == "stop" and self.stop_at is None:
                self.stop_at = now
            elif kind == "exit" and rank not in self.exits:
                self.exits[rank] = ev
                if ev.get("how") == "stopped" and self.first_stop is None:
                    self.first_stop = now
                elif _failing(ev) and self.first_fail is None:
                    self.first_fail = now
            self.waiting_first = bool(self.waiting)
        if self.on_event is not None:
            self.on_event(ev)

    @property
    def exit(self) -> dict | None:
        """Not None once the stage is over (read by the watchdog loop, under the lock)."""
        now = self.clock()
        everyone = len(self.exits) >= self.nproc
        if self.first_stop is not None:
            return self.final_exit() if everyone or now - self.first_stop > RANKS_GRACE_S else None
        if everyone or (self.first_fail is not None and now - self.first_fail > FAIL_GRACE_S):
            return self.final_exit()
        return None

    @exit.setter
    def exit(self, value) -> None:  # _Watch's interface assigns it; the ranks' exits decide here
        pass

    def final_exit(self) -> dict | None:
        """How the stage ended: a rank's "stopped" (ours), else a failing rank's exit, else any."""
        exits = list(self.exits.values())
        for pick in (lambda e: e.get("how") == "stopped", _failing, lambda e: True):
            found = [e for e in exits if pick(e)]
            if found:
                return found[0]
        return None

    def rank_of(self, pid: int) -> tuple[int | None, int | None]:
        if pid in self.mains:
            return self.mains[pid], None
        return self.worker_of.get(pid, (None, None))

    def annotate_hang(self, hang: dict, stack_dir: str) -> dict:
        """Each process's rank (and a worker's index), then the rank and frame every other
        rank waits for (analysis/distculprit)."""
        with self.lock:
            for p in hang.get("processes") or []:
                rank, k = self.rank_of(p["pid"])
                p["rank"] = rank
                if k is not None:
                    p["worker"] = k
        found = dist_culprit(hang.get("processes") or [])
        hang.update(rank=found["rank"], story=found["story"], ranks=found["ranks"])
        if found["culprit"] is not None:
            hang["culprit"] = found["culprit"]
        try:
            with open(os.path.join(stack_dir, "hang.json"), "w") as f:
                json.dump(hang.get("processes") or [], f, indent=1)
        except OSError:
            pass
        return hang


def settle(result, watch: DistWatch) -> None:
    """Split the stage's events by rank. `events` keeps one rank's, so that every analysis of a
    single process reads a distributed stage unchanged: the hang's culprit rank, else the rank
    of a failing exit, else rank 0. `rank_events` holds the others' ({rank: events})."""
    result.exit = watch.final_exit()
    seen = sorted({e.get("rank") for e in watch.events if e.get("rank") is not None})
    primary = 0 if 0 in seen or not seen else seen[0]
    if result.hang and result.hang.get("rank") is not None:
        primary = result.hang["rank"]
    elif result.exit is not None and result.exit.get("how") != "stopped" and result.exit.get("rank") is not None:
        primary = result.exit["rank"]
    result.rank = primary
    result.events = [e for e in watch.events if e.get("rank") in (primary, None)]
    result.rank_events = {str(r): [e for e in watch.events if e.get("rank") == r] for r in seen if r != primary}
    if result.stdout_path:  # the ranks' FIFOs are no output of ours (the tree that used them is ended)
        shutil.rmtree(os.path.join(os.path.dirname(result.stdout_path), "events"), ignore_errors=True)


def node_info(target, nproc: int | None) -> dict:
    """This node's part of a distributed run (session.node): {} for a single process. Refuses
    what cannot run distributed (a notebook runs in one kernel)."""
    if not nproc:
        return {}
    from loaderdoctor.errors import EXIT_USAGE, LoaderDoctorError

    if nproc < 1:
        raise LoaderDoctorError(f"--nproc-per-node must be at least 1, not {nproc}.", EXIT_USAGE)
    if getattr(target, "kind", "script") != "script":
        raise LoaderDoctorError("--nproc-per-node needs a .py script: a notebook (or the demo) runs in one process; "
                                "export the notebook as a script to probe it under torchrun.", EXIT_USAGE)
    import socket

    return {"hostname": socket.gethostname(), "nproc_per_node": nproc, "launcher": "torch.distributed.run --standalone"}
