"""Parent-side samplers: psutil over the runner's process tree, NVML for GPUs.

A thread in the parent wakes on a fixed schedule (deadline scheduling: the next wake-up is
the previous deadline + interval, so lateness does not accumulate), reads every process of
the run (CPU %, USS/PSS, state, threads), system CPU, /dev/shm use and the GPUs, and
records how late each sample was and how much CPU the sampler itself used. Nothing is
added to the runner's process."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import psutil

from loaderdoctor.observe.gpu import Gpus


class TreeSampler(threading.Thread):
    def __init__(self, root_pid: int, roles: Callable[[], dict[int, str]], *, stage: str, interval: float = 0.2,
                 gpus: Gpus | None = None, clock: Callable[[], float] = time.monotonic,
                 memory_every: int = 5, tree_every: int = 5, memory_budget: float = 0.01,
                 worker_memory_interval: float = 0.19):
        super().__init__(name="loaderdoctor-sampler", daemon=True)
        self._me = psutil.Process()
        self.root_pid = root_pid
        self.roles = roles
        self.stage = stage
        self.interval = interval
        self.gpus = gpus
        self.clock = clock
        # Memory (smaps) and finding new processes (a scan of every process's parent) cost
        # most: they run every memory_every / tree_every samples (1 Hz at the 5 Hz default), with
        # the thread counts; CPU and state every sample.
        self.memory_every = max(1, memory_every)
        self.tree_every = max(1, tree_every)
        # Reading USS/PSS (smaps_rollup) costs ~5 ms per process with torch loaded: after each
        # memory pass its own CPU cost sets the wait before the next (memory_budget of a core).
        self.memory_budget = memory_budget
        self._next_memory_n = 0
        # Workers' private memory on a schedule of its own (worker-memory-growth needs a slope
        # even from workers that live under a second): a new worker once it is
        # worker_memory_interval old (a reading before its first batch is fetched is start-up,
        # not growth, and the analysis drops it: reading it at once spent the budget for
        # nothing), then every worker_memory_interval, while all memory reading together stays
        # within the budget (readings in worker_memory; the full passes above keep their shape
        # in rows).
        self.worker_memory_interval = worker_memory_interval
        self.worker_memory: list[dict] = []
        self._worker_read_at: dict[int, float] = {}
        self._worker_seen_at: dict[int, float] = {}
        self.memory_cpu_s = 0.0  # CPU the memory reading took, both kinds
        # Each kind keeps to its own share, so the full passes' spend while the script starts
        # (the main process alone, often large) never starves the workers' readings later: the
        # full passes accrue budget at the whole rate while no worker is alive and at half the
        # rate while one is; the workers' readings accrue the other half; together within the
        # budget.
        self._full_cpu_s = 0.0
        self._worker_cpu_s = 0.0
        self._worker_time = 0.0  # seconds sampled with a worker alive
        self._last_t: float | None = None
        self._read_cost = 0.0  # the last worker reading's
        self._known: list[psutil.Process] = []
        self.rows: list[dict] = []  # one per process per sample
        self.system: list[dict] = []  # one per sample
        self.lateness: list[float] = []
        self.cpu_s = 0.0  # CPU time the sampler thread itself used
        self.t0 = clock()
        self._halt = threading.Event()
        self._procs: dict[int, psutil.Process] = {}

    def stop(self, timeout: float = 2.0) -> None:
        self._halt.set()
        self.join(timeout)

    def _tree(self, n: int, roles: dict[int, str]) -> list[psutil.Process]:
        rescan = n % self.tree_every == 0 or any(pid not in self._procs for pid in roles)
        if not rescan:
            return self._known  # a process that ended fails its read below and is skipped
        try:
            root = self._procs.get(self.root_pid) or psutil.Process(self.root_pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        out = []
        for p in found:
            known = self._procs.get(p.pid)
            if known is None:
                known = self._procs[p.pid] = p
                try:
                    known.cpu_percent(None)  # primes the delta
                except psutil.Error:
                    continue
            out.append(known)
        self._known = out
        return out

    def sample_once(self, n: int) -> None:
        t = self.clock() - self.t0
        roles = self.roles()
        workers = "worker" in roles.values()
        if workers and self._last_t is not None:
            self._worker_time += max(0.0, t - self._last_t)
        self._last_t = t
        # memory reading of every kind stays within memory_budget of the time sampled
        full_allowance = self.memory_budget * max(0.0, t - 0.5 * self._worker_time) + 0.005
        with_memory = n >= self._next_memory_n and (n == 0 or self._full_cpu_s <= full_allowance)
        c0 = time.thread_time() if with_memory else 0.0
        for p in self._tree(n, roles):
            try:
                with p.oneshot():
                    role = roles.get(p.pid) or ("main" if p.pid == self.root_pid else "other")
                    row = {"t": round(t, 3), "stage": self.stage, "pid": p.pid, "role": role,
                           "cpu": p.cpu_percent(None), "status": p.status()}
                    if with_memory:
                        mem = p.memory_full_info()
                        row.update(uss=mem.uss, pss=getattr(mem, "pss", None), rss=mem.rss,
                                   threads=p.num_threads())
                        if role == "worker":
                            self._worker_read_at[p.pid] = t
            except psutil.Error:
                continue
            self.rows.append(row)
        if with_memory:
            cost = time.thread_time() - c0
            self.memory_cpu_s += cost
            self._full_cpu_s += cost
            # with workers, the full passes pace themselves on half the budget: the workers' own
            # readings in between get the rest
            share = 0.5 if workers else 1.0
            wait = max(self.memory_every, int(cost / (self.memory_budget * share) / self.interval) + 1)
            self._next_memory_n = n + wait
        else:
            self._worker_memory_pass(t, roles)
        sysrow = {"t": round(t, 3), "stage": self.stage, "cpu": psutil.cpu_percent(None),
                  "self_cpu": self._me.cpu_percent(None)}  # loaderdoctor's own (events, this sampler)
        try:
            st = os.statvfs("/dev/shm")
            sysrow["shm_used"] = (st.f_blocks - st.f_bfree) * st.f_frsize
        except OSError:
            sysrow["shm_used"] = None
        if self.gpus is not None and self.gpus.available:
            for g in self.gpus.sample():
                for key, name in (("util", "util"), ("mem_used_mb", "mem_mb"), ("power_w", "power_w"),
                                  ("sm_mhz", "sm_mhz"), ("pcie_rx_mb_s", "pcie_rx_mb_s"),
                                  ("pcie_tx_mb_s", "pcie_tx_mb_s")):
                    sysrow[f"gpu{g['index']}_{name}"] = g.get(key)
        self.system.append(sysrow)

    def _worker_memory_pass(self, t: float, roles: dict[int, str]) -> None:
        """USS of the workers that are due, while these readings' CPU stays within half of
        memory_budget of the time sampled with a worker alive (plus a small allowance for the
        first readings)."""
        allowance = 0.5 * self.memory_budget * self._worker_time + 0.005
        due = []
        for p in self._known:
            if roles.get(p.pid) != "worker":
                continue
            seen = self._worker_seen_at.setdefault(p.pid, t)
            last = self._worker_read_at.get(p.pid, float("-inf"))
            if t - seen >= self.worker_memory_interval and t - last >= self.worker_memory_interval:
                due.append((last, p))
        due.sort(key=lambda x: x[0])  # never read first, then the longest unread
        for _, p in due:
            if self._worker_cpu_s + self._read_cost > allowance:
                return
            c0 = time.thread_time()
            try:
                mem = p.memory_full_info()
            except psutil.Error:
                continue
            finally:
                cost = time.thread_time() - c0
                self.memory_cpu_s += cost
                self._worker_cpu_s += cost
                self._read_cost = cost
            self._worker_read_at[p.pid] = t
            self.worker_memory.append({"t": round(t, 3), "pid": p.pid, "uss": mem.uss,
                                       "pss": getattr(mem, "pss", None)})

    def run(self) -> None:
        c0 = time.thread_time()
        psutil.cpu_percent(None)
        deadline = self.clock()
        n = 0
        while not self._halt.is_set():
            self.sample_once(n)
            n += 1
            deadline += self.interval
            now = self.clock()
            if now > deadline:  # fell behind: record it, skip the missed slots
                self.lateness.append(now - deadline)
                deadline = now
            else:
                self.lateness.append(0.0)
            self._halt.wait(max(0.0, deadline - self.clock()))
        self.cpu_s = time.thread_time() - c0

    def summary(self) -> dict:
        """Raw-ish record for the session: rows, system rows, and the sampler's own quality."""
        wall = max(1e-9, self.clock() - self.t0)
        lat = sorted(self.lateness)
        return {
            "interval_s": self.interval,
            "samples": len(self.system),
            "wall_s": round(wall, 3),
            "sampler_cpu_s": round(self.cpu_s, 4),
            "sampler_cpu_pct_of_core": round(100 * self.cpu_s / wall, 3),
            "late_samples": sum(1 for x in lat if x > 0),
            "lateness_max_s": round(lat[-1], 4) if lat else None,
            "memory_cpu_pct_of_core": round(100 * self.memory_cpu_s / wall, 3),
            "rows": self.rows,
            "worker_memory": self.worker_memory,
            "system": self.system,
        }
