"""The machine the run happened on (parent side; the runner adds torch facts)."""

from __future__ import annotations

import os
import platform
import resource
import sys


def cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, v1 cfs), None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return quota / period if quota > 0 else None
    except (OSError, ValueError):
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
    """Bytes allowed by the cgroup (v2 memory.max, v1 limit_in_bytes), None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                v = f.read().strip()
        except OSError:
            continue
        if v == "max" or not v.isdigit() or int(v) >= 2**60:
            return None
        return int(v)
    return None


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
