"""Pure: what the parent's samples say (peaks per loader, one process's memory, the CPUs'
load while batches flowed, a downsampled copy for the report)."""

from __future__ import annotations


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


def outside_load(summary: dict | None, window: list[float] | None, machine_cpus: int) -> float | None:
    """CPU cores that processes outside the probed tree took while the stage's batches flowed:
    the machine's use (all its CPUs) less the run's own processes (every role) and
    loaderdoctor's own (reading the events, sampling), on average."""
    if not summary or not window:
        return None
    t0, t1 = window
    rows = [s for s in summary.get("system", []) if t0 < s["t"] <= t1 and s.get("cpu") is not None]
    system = {s["t"]: s["cpu"] for s in rows}
    own = {s["t"]: (s.get("self_cpu") or 0.0) / 100 for s in rows}
    tree: dict[float, float] = {}
    seen: set[int] = set()
    for r in summary.get("rows", []):
        first = r["pid"] not in seen
        seen.add(r["pid"])
        if r["t"] in system and not first and r.get("cpu") is not None:
            tree[r["t"]] = tree.get(r["t"], 0.0) + r["cpu"]
    if len(system) < 3:  # too few readings to say anything about the machine
        return None
    outside = [max(0.0, system[t] / 100 * machine_cpus - tree.get(t, 0.0) / 100 - own[t]) for t in system]
    return round(sum(outside) / len(outside), 2)


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
