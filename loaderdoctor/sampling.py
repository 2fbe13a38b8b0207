"""Parent-side samplers: psutil over the runner's process tree, NVML for GPUs.

A thread in the parent wakes on a fixed schedule (deadline scheduling: the next wake-up is
the previous deadline + interval, so lateness does not accumulate), reads every process of
the run (CPU %, USS/PSS, state, threads), system CPU, /dev/shm use and the GPUs, and
records how late each sample was and how much CPU the sampler itself used. Nothing is
added to the runner's process.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import psutil

from loaderdoctor.gpu import Gpus


class TreeSampler(threading.Thread):
    def __init__(self, root_pid: int, roles: Callable[[], dict[int, str]], *, stage: str, interval: float = 0.2,
                 gpus: Gpus | None = None, clock: Callable[[], float] = time.monotonic,
                 memory_every: int = 5, tree_every: int = 5, memory_budget: float = 0.01):
        super().__init__(name="loaderdoctor-sampler", daemon=True)
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
        with_memory = n >= self._next_memory_n
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
            except psutil.Error:
                continue
            self.rows.append(row)
        if with_memory:
            cost = time.thread_time() - c0
            wait = max(self.memory_every, int(cost / self.memory_budget / self.interval) + 1)
            self._next_memory_n = n + wait
        sysrow = {"t": round(t, 3), "stage": self.stage, "cpu": psutil.cpu_percent(None)}
        try:
            st = os.statvfs("/dev/shm")
            sysrow["shm_used"] = (st.f_blocks - st.f_bfree) * st.f_frsize
        except OSError:
            sysrow["shm_used"] = None
        if self.gpus is not None and self.gpus.available:
            for g in self.gpus.sample():
                sysrow[f"gpu{g['index']}_util"] = g["util"]
                sysrow[f"gpu{g['index']}_mem_mb"] = g["mem_used_mb"]
                sysrow[f"gpu{g['index']}_power_w"] = g["power_w"]
        self.system.append(sysrow)

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
            "rows": self.rows,
            "system": self.system,
        }


def loader_peaks(summary: dict | None) -> dict:
    """Peak memory and mean CPU of the loader's processes (main + workers) in one stage.
    USS summed over processes (private memory, not counted twice), PSS likewise."""
    if not summary or not summary.get("rows"):
        return {"peak_uss_mb": None, "peak_pss_mb": None, "cpu_main_pct": None, "cpu_workers_pct": None}
    by_t: dict[float, dict] = {}
    cpu_main, cpu_workers = [], {}
    for r in summary["rows"]:
        if r["role"] not in ("main", "worker"):
            continue
        agg = by_t.setdefault(r["t"], {"uss": 0, "pss": 0, "workers_cpu": 0.0})
        agg["uss"] += r.get("uss") or 0  # 0 where memory was not read: max() ignores those
        agg["pss"] += r.get("pss") or 0
        if r["role"] == "main":
            cpu_main.append(r["cpu"])
        else:
            agg["workers_cpu"] += r["cpu"]
            cpu_workers[r["t"]] = agg["workers_cpu"]
    peak_uss = max((a["uss"] for a in by_t.values()), default=0)
    peak_pss = max((a["pss"] for a in by_t.values()), default=0)
    return {
        "peak_uss_mb": round(peak_uss / 2**20, 1) if peak_uss else None,
        "peak_pss_mb": round(peak_pss / 2**20, 1) if peak_pss else None,
        "cpu_main_pct": round(sum(cpu_main) / len(cpu_main), 1) if cpu_main else None,
        "cpu_workers_pct": round(sum(cpu_workers.values()) / len(cpu_workers), 1) if cpu_workers else None,
    }


def process_memory(summary: dict | None, pid: int | None, role: str = "worker") -> dict | None:
    """One process's memory as the samples saw it (the process with that pid, or with no pid
    the first one sampled in that role): its private memory (USS) at the first, last and
    highest reading, when they were taken (seconds into the stage), and how many readings
    there were. None when the process's memory was never read."""
    if not summary:
        return None
    if pid is None:
        pid = next((r["pid"] for r in summary.get("rows", []) if r.get("role") == role), None)
    reads = [(r["t"], r["uss"]) for r in summary.get("rows", []) if r.get("pid") == pid and r.get("uss")]
    if not reads:
        return None
    mb = 2**20
    return {"readings": len(reads), "first_mb": round(reads[0][1] / mb, 1), "first_t": reads[0][0],
            "last_mb": round(reads[-1][1] / mb, 1), "last_t": reads[-1][0],
            "peak_mb": round(max(u for _, u in reads) / mb, 1)}


def window_load(summary: dict | None, window: list[float] | None, cpus: int) -> dict | None:
    """How busy the CPUs were while batches flowed (the window between the first and last
    batch): the machine's CPU use, the loader's processes' (main + workers) in cores, and
    the workers' mean CPU share each (1.0: a worker computes all the time, never waits).
    `busy` is the larger of the first two as a fraction of the effective CPUs: the process
    tree catches a CPU quota smaller than the machine, the machine figure catches everything
    else competing for the cores."""
    if not summary or not window:
        return None
    t0, t1 = window
    system = [s["cpu"] for s in summary.get("system", []) if t0 < s["t"] <= t1 and s.get("cpu") is not None]
    tree: dict[float, float] = {}
    per_worker: list[float] = []
    seen: set[int] = set()
    for r in summary.get("rows", []):
        first = r["pid"] not in seen  # read as the process was found: its CPU reads 0.0
        seen.add(r["pid"])
        if r["role"] in ("main", "worker") and t0 < r["t"] <= t1 and not first:
            tree[r["t"]] = tree.get(r["t"], 0.0) + r["cpu"]
            if r["role"] == "worker":
                per_worker.append(r["cpu"])
    if not system and not tree:
        return None
    system_pct = sum(system) / len(system) if system else None
    tree_cores = sum(tree.values()) / len(tree) / 100 if tree else None
    busy = max(system_pct / 100 if system_pct is not None else 0.0,
               tree_cores / max(1, cpus) if tree_cores is not None else 0.0)
    return {"system_cpu_pct": round(system_pct, 1) if system_pct is not None else None,
            "loader_cpu_cores": round(tree_cores, 2) if tree_cores is not None else None,
            "worker_cpu_share": round(sum(per_worker) / len(per_worker) / 100, 3) if per_worker else None,
            "busy": round(min(1.0, busy), 3), "samples": max(len(system), len(tree))}


def downsample(summary: dict | None, limit: int = 300) -> dict | None:
    """What the report keeps of a stage's samples: per-time totals by role and the system
    series, at most `limit` points (striding; the report says when it did), plus the
    sampler's own quality figures."""
    if not summary:
        return None
    by_t: dict[float, dict] = {}
    for r in summary.get("rows", []):
        row = by_t.setdefault(r["t"], {"t": r["t"], "cpu_main": 0.0, "cpu_workers": 0.0, "uss_mb": None,
                                       "workers": 0, "disk_wait": 0})
        if r["role"] == "main":
            row["cpu_main"] += r["cpu"]
        elif r["role"] == "worker":
            row["cpu_workers"] += r["cpu"]
            row["workers"] += 1
        if r.get("uss") is not None:  # memory is read every few samples only
            row["uss_mb"] = (row["uss_mb"] or 0.0) + r["uss"] / 2**20
        row["disk_wait"] += r.get("status") == "disk-sleep"
    sysrows = {s["t"]: s for s in summary.get("system", [])}
    series = []
    for t in sorted(set(by_t) | set(sysrows)):
        row = dict(by_t.get(t, {"t": t}))
        srow = sysrows.get(t, {})
        row["cpu_system"] = srow.get("cpu")
        row["shm_used_mb"] = round(srow["shm_used"] / 2**20, 2) if srow.get("shm_used") is not None else None
        for k, v in srow.items():
            if k.startswith("gpu"):
                row[k] = v
        if row.get("uss_mb") is not None:
            row["uss_mb"] = round(row["uss_mb"], 1)
        series.append(row)
    stride = max(1, -(-len(series) // limit))
    return {"series": series[::stride], "downsampled_by": stride, "points_measured": len(series),
            **{k: summary.get(k) for k in ("interval_s", "samples", "wall_s", "sampler_cpu_s",
                                           "sampler_cpu_pct_of_core", "late_samples", "lateness_max_s")}}
