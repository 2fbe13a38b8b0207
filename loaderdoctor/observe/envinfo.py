"""The machine the run happened on (parent side; the runner adds torch facts)."""

from __future__ import annotations

import os
import platform
import resource
import sys

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_dirs(controller: str, proc_cgroup: str = "/proc/self/cgroup", root: str = CGROUP_ROOT) -> list[str]:
    """The directories of this process's own cgroup for a controller, most specific first:
    the v1 hierarchy of that controller, then the v2 one, each at our own path (a process
    on a host or in a nested cgroup) and at the mount's root (inside a container, where
    the root is our own cgroup)."""
    v1 = v2 = None
    try:
        with open(proc_cgroup) as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if ctrls == "":
                    v2 = path
                elif controller in ctrls.split(","):
                    v1 = path
    except (OSError, ValueError):
        pass
    out = []
    for base, path in ((os.path.join(root, controller), v1), (root, v2)):
        for d in ((base + path) if path else None, base):
            if d and d not in out and os.path.isdir(d):
                out.append(d.rstrip("/") or "/")
    return out


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cgroup_cpu_quota() -> float | None:
    """CPUs allowed by our cgroup's quota (v2 cpu.max, v1 cfs), None when unlimited."""
    for d in cgroup_dirs("cpu"):
        v2 = _read(os.path.join(d, "cpu.max"))
        if v2:
            try:
                quota, period = v2.split()[:2]
                return None if quota == "max" else int(quota) / int(period)
            except ValueError:
                continue
        quota, period = _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))
        if quota and period:
            try:
                return int(quota) / int(period) if int(quota) > 0 else None
            except (ValueError, ZeroDivisionError):
                continue
    return None


def effective_cpus() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    eff = affinity if quota is None else max(1, min(affinity, int(quota)))
    return {"cpu_count": os.cpu_count(), "cpu_affinity": affinity, "cpu_quota": quota,
            "cpu_count_effective": eff}


def shm_total() -> int | None:
    try:
        st = os.statvfs("/dev/shm")
        return st.f_blocks * st.f_frsize
    except OSError:
        return None


def cgroup_memory_limit() -> int | None:
    """Bytes allowed by our cgroup (v2 memory.max, v1 limit_in_bytes; the smaller of our
    own cgroup's and the mount root's), None when unlimited."""
    limits = []
    for d in cgroup_dirs("memory"):
        for name in ("memory.max", "memory.limit_in_bytes"):
            v = _read(os.path.join(d, name))
            if v and v.isdigit() and int(v) < 2**60:
                limits.append(int(v))
    return min(limits) if limits else None


def _oom_kill_field(path: str) -> int | None:
    """The `oom_kill N` line of a kernel "key value" file, None when it has none."""
    for line in (_read(path) or "").splitlines():
        k, _, v = line.partition(" ")
        if k == "oom_kill" and v.strip().isdigit():
            return int(v)
    return None


def oom_kill_counters() -> dict[str, int]:
    """The kernel's records of OOM kills that we can read: the machine's counter
    (/proc/vmstat oom_kill) and our memory cgroup's (v2 memory.events, v1
    memory.oom_control). A stage compares them before and after."""
    paths = ["/proc/vmstat"] + [os.path.join(d, name) for d in cgroup_dirs("memory")[:1]
                                for name in ("memory.events", "memory.oom_control")]
    counts = {path: _oom_kill_field(path) for path in paths}
    return {path: n for path, n in counts.items() if n is not None}


def collect(gpus=None) -> dict:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        **effective_cpus(),
        "shm_bytes_total": shm_total(),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "cgroup_memory_limit_bytes": cgroup_memory_limit(),
        "torch": None,
        "start_method_default": None,
        "gpus": [],
        "gpu_status": None,
    }
    try:
        import psutil

        env["memory_total_bytes"] = psutil.virtual_memory().total
    except Exception:
        env["memory_total_bytes"] = None
    if gpus is not None:
        env["gpus"] = gpus.devices() if gpus.available else []
        env["gpu_status"] = "available" if gpus.available else f"unavailable ({gpus.reason})"
    return env
