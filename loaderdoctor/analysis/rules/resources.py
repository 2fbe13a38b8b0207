"""Rules on the machine's limits: shm-small, fd-limit, thread-oversubscription."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _mb, _real


def rule_noisy_machine(r: dict) -> list[Finding]:
    noisy = [n for n in r.get("noise") or [] if n.get("noisy")]
    if not noisy:
        return []
    worst = max(noisy, key=lambda n: n["outside_cores"])
    real = [n["stage"] for n in noisy if n["stage"] == "baseline" or n["stage"].startswith("confirm")]
    stages = ", ".join(f"{n['stage']} ({n['outside_cores']:.1f})" for n in noisy)
    return [Finding("noisy-machine", "warning" if real else "info",
                    f"Other processes took up to {worst['outside_cores']:.1f} CPU cores during the measurements",
                    f"CPU cores used by processes outside the probed tree while batches flowed: {stages} "
                    f"(effective CPUs: {r['environment'].get('cpu_count_effective')}). Those measurements are marked "
                    "noisy; the confirm's interleaved pairs spread such drift over both arms.",
                    "Probe on a quiet machine (or pin loaderdoctor with taskset/cgroups away from other jobs) and "
                    "re-run; read a speedup within noise as unmeasured, not as none.")]


def rule_shm_small(r: dict) -> list[Finding]:
    out = []
    shm_crash = next((c for c in _real(r.get("crashes")) if c.get("shm")), None)
    p = r.get("preflight") or {}
    total, flight = p.get("shm_bytes_total"), p.get("in_flight_bytes")
    arithmetic = None
    if total and flight:
        arithmetic = (f"/dev/shm holds {_mb(total)}; in flight: {p['num_workers']} workers x prefetch_factor "
                      f"{p['prefetch_factor']} x {_mb(p['batch_bytes'])} per batch (measured: {p.get('batch_bytes_from')}) = "
                      f"{_mb(flight)}")
    if shm_crash:
        out.append(Finding("shm-small", "critical", "Shared memory (/dev/shm) ran out",
                           f"A worker failed with {shm_crash.get('signal') or shm_crash.get('exception_type')}: "
                           f"{shm_crash.get('message')}." + (f" {arithmetic}." if arithmetic else ""),
                           "Give the container more shared memory (docker run --shm-size=8g, or --ipc=host; in "
                           "Kubernetes an emptyDir with medium: Memory on /dev/shm), or lower num_workers, "
                           "prefetch_factor or the batch size."))
    elif arithmetic and total < THRESHOLDS["shm_headroom"] * flight:
        out.append(Finding("shm-small", "warning", "/dev/shm is too small for the batches in flight",
                           f"{arithmetic}, more than half of it; a second live iterator (validation) doubles that.",
                           f"Raise /dev/shm to at least {_mb(4 * flight)} (docker --shm-size), or lower num_workers, "
                           "prefetch_factor or the batch size."))
    return out


def rule_fd_limit(r: dict) -> list[Finding]:
    fd_crash = next((c for c in _real(r.get("crashes")) if any(
        s in (c.get("message") or "") for s in ("Too many open files", "received 0 items of ancdata"))), None)
    p = r.get("preflight") or {}
    limit, tensors = p.get("open_files_limit"), p.get("in_flight_tensors")
    fix = ("Raise the limit (`ulimit -n 65536` before training), or call "
           "torch.multiprocessing.set_sharing_strategy('file_system') at the start of the script; do not keep "
           "references to whole batches.")
    if fd_crash:
        return [Finding("fd-limit", "critical", "The process ran out of file descriptors",
                        f"The run failed with: {fd_crash.get('message')}. Open-file limit: {limit}.", fix)]
    strategy = p.get("sharing_strategy")
    if strategy == "file_system":  # tensors travel as named files in /dev/shm: no descriptor each
        return []
    if limit and tensors and p.get("num_workers") and (limit < THRESHOLDS["fd_headroom"] * tensors
                                                       or limit < THRESHOLDS["fd_min"]):
        how = f"the '{strategy}' sharing strategy: " if strategy else ""
        return [Finding("fd-limit", "warning", f"The open-file limit ({limit}) is low for this loader",
                        f"Each batch holds {p['tensors_per_batch']} tensors; {p['num_workers']} workers x prefetch_factor "
                        f"{p['prefetch_factor']} keep {tensors} in flight, {how}one file descriptor each when shared "
                        f"with the main process; the soft limit is {limit}.", fix)]
    return []


def rule_thread_oversubscription(r: dict) -> list[Finding]:
    p = r.get("preflight") or {}
    total, cpus, nw = p.get("worker_threads_total_max"), p.get("cpu_count_effective"), p.get("num_workers") or 0
    if not total or not cpus or nw < 2:
        return []
    pools = total - nw * THRESHOLDS["worker_base_threads"]
    if pools <= THRESHOLDS["threads_per_cpu"] * cpus:
        return []
    return [Finding("thread-oversubscription", "warning",
                    f"{pools} thread-pool threads in the workers compete for {cpus} CPUs",
                    f"Sampled during the baseline: {nw} workers with up to {p['worker_threads_max']} threads each, "
                    f"{total} threads at once; beyond torch's own {THRESHOLDS['worker_base_threads']} per worker that "
                    f"is {pools} pool threads on {cpus} effective CPUs (affinity and cgroup quota).",
                    "Limit each worker to one thread: set OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1 in the "
                    "environment, or call torch.set_num_threads(1) and cv2.setNumThreads(0) in worker_init_fn.")]
