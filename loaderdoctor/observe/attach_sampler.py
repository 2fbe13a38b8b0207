"""Parent side of `loaderdoctor attach`: sample a live process tree without stopping it.

How (and why this way):

* One `py-spy record --subprocesses --idle --nonblocking --format speedscope` for the whole
  window. A single sampler process follows the whole tree (the launcher, every rank, every
  DataLoader worker, new workers of a new epoch) at a steady rate, never pauses the target
  (--nonblocking), keeps idle threads (--idle: a main thread blocked on a queue is exactly what
  we look for), and writes every sample in order, per thread (speedscope), so "the stack never
  changed" can be read. It is stopped with SIGINT (py-spy then writes the file), so the window
  can be any length. Repeated `py-spy dump` would start one py-spy per process per sample:
  more CPU per sample and stacks of different processes from different instants.
* One `py-spy dump --nonblocking --json --locals` of each process at each end of the window:
  the full stacks for the report, and two torch locals that say who owes what
  (`worker_id` in the main's `_next_data`, `worker_id`/`idx` in each worker's `_worker_loop`).
  Only those locals are kept; the user's own variables are never recorded.
* psutil readings of the tree every tick: CPU time, RSS, context switches (and USS at both
  ends), which is how "a worker made no progress" is measured besides its stacks.

The result is one raw, JSON-able record; loaderdoctor.analysis.attach turns it into a report.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import time
from typing import Callable

import psutil

from loaderdoctor.lifeline import preexec_die_with_parent
from loaderdoctor.observe.pyspy_output import (
    _COUNTS,
    classify_pyspy_error,
    first_error_line,
    parse_speedscope,
)
from loaderdoctor.observe.stacks import pyspy_path

RATE_HZ = 20            # samples per second per thread, for windows up to MAX_SAMPLES / RATE_HZ
MAX_SAMPLES = 2400      # per thread: a long --timeout window samples more slowly, not more
TICK_S = 0.5            # psutil readings of the tree
DUMP_TIMEOUT_S = 10.0
STOP_GRACE_S = 10.0
MAX_PYTHON_PROBES = 32  # descendants tried when the PID itself is not Python (a launcher)
KEPT_LOCALS = ("worker_id", "idx")
RANK_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK")


class SamplerError(Exception):
    """Why the tree could not be sampled. kind: not-running, no-ptrace, not-python,
    py-spy-missing, py-spy-failed."""

    def __init__(self, kind: str, detail: str, pid: int | None = None, process: str | None = None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.pid = pid
        self.process = process


# ---------------------------------------------------------------- py-spy's words


def ptrace_scope(path: str = "/proc/sys/kernel/yama/ptrace_scope") -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- processes


def describe(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        cmd = p.cmdline()
        return " ".join(cmd) if cmd else p.name()
    except psutil.Error:
        return f"pid {pid}"


def tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (the ones alive now)."""
    root = psutil.Process(pid)
    out = [root]
    try:
        out.extend(root.children(recursive=True))
    except psutil.Error:
        pass
    me = os.getpid()
    return [p for p in out if p.pid != me]


def reading(p: psutil.Process, t: float, full: bool = False) -> dict | None:
    """One psutil reading of a process; None when it is gone."""
    try:
        with p.oneshot():
            cpu = p.cpu_times()
            ctx = p.num_ctx_switches()
            r = {"pid": p.pid, "t": round(t, 4), "cpu_s": round(cpu.user + cpu.system, 4),
                 "rss": p.memory_info().rss, "ctx_voluntary": ctx.voluntary, "ctx_involuntary": ctx.involuntary,
                 "status": p.status(), "ppid": p.ppid(), "threads": p.num_threads()}
        if full:
            r["cmdline"] = p.cmdline()
            r["name"] = p.name()
            for key, get in (("exe", p.exe), ("cwd", p.cwd)):
                try:
                    r[key] = get()
                except psutil.Error:
                    r[key] = None
            try:
                r["uss"] = p.memory_full_info().uss
            except (psutil.Error, AttributeError):
                r["uss"] = None
            try:
                env = p.environ()
                r["env"] = {k: env[k] for k in RANK_ENV if k in env}
            except psutil.Error:
                r["env"] = {}
        return r
    except psutil.Error:
        return None


# ---------------------------------------------------------------- py-spy dump


def _thread(t: dict) -> dict:
    frames = []
    for f in t.get("frames") or []:
        fr = {"function": f.get("name"), "file": f.get("filename"), "line": f.get("line")}
        if "/torch/utils/data/" in (f.get("filename") or "").replace("\\", "/"):
            kept = {l.get("name"): l.get("repr") for l in f.get("locals") or [] if l.get("name") in KEPT_LOCALS}
            if kept:
                fr["locals"] = kept
        frames.append(fr)
    return {"name": t.get("thread_name"), "tid": t.get("os_thread_id") or t.get("thread_id"),
            "active": t.get("active"), "frames": frames}


def dump_many(exe: str, pids: list[int], timeout: float = DUMP_TIMEOUT_S,
              with_locals: bool = True) -> tuple[dict[int, list[dict]], dict[int, str]]:
    """`py-spy dump --nonblocking --json` of each process, in parallel. Returns the threads of
    each process read, and py-spy's message for each that was not."""
    cmd = [exe, "dump", "--nonblocking", "--json"] + (["--locals"] if with_locals else [])
    jobs = {}
    errors: dict[int, str] = {}
    for pid in pids:
        try:
            jobs[pid] = subprocess.Popen(cmd + ["--pid", str(pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         preexec_fn=preexec_die_with_parent,
                                         stdin=subprocess.DEVNULL)
        except OSError as e:
            errors[pid] = f"{exe} could not be started: {e}"
    out: dict[int, list[dict]] = {}
    deadline = time.monotonic() + timeout

    try:
        for pid, job in jobs.items():
            try:
                stdout, stderr = job.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.kill()
                job.communicate()
                errors[pid] = f"py-spy did not answer within {timeout:.0f} s"
                continue
            if job.returncode != 0:
                errors[pid] = (stderr or b"").decode(errors="replace")
                continue
            try:
                out[pid] = [_thread(t) for t in json.loads(stdout)]
            except (ValueError, AttributeError, TypeError) as e:
                errors[pid] = f"py-spy's JSON could not be read: {e}"
    finally:
        for job in jobs.values():
            if job.poll() is None:
                job.kill()
                job.wait(timeout=DUMP_TIMEOUT_S)
    return out, errors


_VERSION = re.compile(r"^Python v(\S+) \((.*)\)\s*$", re.M)


def python_of(exe: str, pid: int, timeout: float = DUMP_TIMEOUT_S) -> tuple[dict | None, str]:
    """The Python version and interpreter of a process (py-spy's text dump header), or None and
    py-spy's message."""
    try:
        job = subprocess.run([exe, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"py-spy did not answer within {timeout:.0f} s"
    except OSError as e:
        return None, f"{exe} could not be started: {e}"
    text = job.stdout.decode(errors="replace")
    if job.returncode != 0:
        return None, job.stderr.decode(errors="replace") or text
    m = _VERSION.search(text)
    return {"version": m.group(1) if m else None, "executable": m.group(2) if m else None}, ""


def check_target(pid: int, exe: str | None = None) -> dict:
    """That PID runs, can be read by py-spy, and is Python or has Python descendants.
    Raises SamplerError otherwise. Costs one `py-spy dump` (a few ms of the target's time,
    without pausing it)."""
    exe = exe or pyspy_path()
    if not exe:
        raise SamplerError("py-spy-missing", "py-spy was not found beside Python or on PATH", pid)
    try:
        root = psutil.Process(pid)
        if root.status() == psutil.STATUS_ZOMBIE:
            raise SamplerError("not-running", "it has exited (a zombie its parent has not reaped)", pid)
    except (psutil.NoSuchProcess, ValueError):
        raise SamplerError("not-running", "no process has this PID", pid) from None
    except psutil.AccessDenied:
        pass
    what = describe(pid)
    info, said = python_of(exe, pid)
    if info:
        return {"pid": pid, "python_pid": pid, "python": info, "process": what}
    kind = classify_pyspy_error(said)
    if kind in ("no-ptrace", "not-running"):
        raise SamplerError(kind, first_error_line(said), pid, what)
    try:
        kids = root.children(recursive=True)
    except psutil.Error:
        kids = []
    for child in kids[:MAX_PYTHON_PROBES]:
        cinfo, csaid = python_of(exe, child.pid)
        if cinfo:
            return {"pid": pid, "python_pid": child.pid, "python": cinfo, "process": what}
        if classify_pyspy_error(csaid) == "no-ptrace":
            raise SamplerError("no-ptrace", first_error_line(csaid), child.pid, describe(child.pid))
    if kind == "not-python":
        raise SamplerError("not-python", first_error_line(said), pid, what)
    raise SamplerError("py-spy-failed", first_error_line(said), pid, what)


# ---------------------------------------------------------------- py-spy record (speedscope)


def rate_for(window: float, rate: float = RATE_HZ) -> float:
    return max(1.0, min(rate, MAX_SAMPLES / max(window, 1e-3)))


def _read_while_recording(pid: int, procs: dict, first: dict, rec: subprocess.Popen, w0: float, duration: float,
                          tick: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> dict:
    """psutil readings of every process of the tree on a fixed schedule while py-spy records;
    processes born meanwhile join. Returns the readings and the schedule's own quality."""
    readings: list[dict] = []
    ticks = late = 0
    lateness_max = 0.0
    next_t = w0 + tick
    ended_early = False
    while clock() - w0 < duration:
        if rec.poll() is not None:
            ended_early = True
            break
        sleep(max(0.0, min(next_t, w0 + duration) - clock()))
        now = clock()
        if now - w0 >= duration:
            break
        lag = now - next_t
        if lag > tick / 2:
            late += 1
        lateness_max = max(lateness_max, lag)
        ticks += 1
        next_t += tick
        try:
            for p in tree(pid):
                procs.setdefault(p.pid, p)
        except psutil.Error:
            pass
        for q, p in list(procs.items()):
            r = reading(p, now - w0)
            if r:
                readings.append(r)
            if q not in first or first[q] is None:
                first[q] = reading(p, now - w0, full=True)
    return {"readings": readings, "ticks": ticks, "late": late, "lateness_max": lateness_max,
            "ended_early": ended_early}


def _load_stacks(log_path: str, out_file: str, rec: subprocess.Popen, pid: int, checked: dict):
    """py-spy's samples (parse_speedscope) and its closing counts; SamplerError when it wrote none."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        log_text = f.read()
    counts = _COUNTS.search(log_text)
    stacks = None
    if os.path.exists(out_file):
        try:
            with open(out_file, encoding="utf-8") as f:
                stacks = parse_speedscope(json.load(f))
        except (OSError, ValueError) as e:
            log_text += f"\nloaderdoctor: the speedscope file could not be read: {e}"
    if stacks is None:
        kind = classify_pyspy_error(log_text)
        raise SamplerError(kind if kind != "other" else "py-spy-failed", first_error_line(log_text) or
                           f"py-spy record exited with code {rec.returncode} and wrote no samples", pid,
                           checked.get("process"))
    return stacks, counts, log_text


def _cpu_s(pid: int) -> float | None:
    """CPU seconds a process has used so far (py-spy's own cost), or None."""
    try:
        c = psutil.Process(pid).cpu_times()
        return round(c.user + c.system, 4)
    except psutil.Error:
        return None


def _stop_recording(rec: subprocess.Popen) -> None:
    """SIGINT makes py-spy write its file; a py-spy that does not stop in time is killed."""
    if rec.poll() is None:
        rec.send_signal(signal.SIGINT)
    try:
        rec.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        rec.kill()
        rec.wait(timeout=STOP_GRACE_S)


def sample_tree(pid: int, duration: float, workdir: str, *, checked: dict | None = None, exe: str | None = None,
                rate: float | None = None, tick: float = TICK_S, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> dict:
    """Sample PID's tree for `duration` seconds. Writes py-spy's file and log into workdir and
    returns the raw record (JSON-able). Never signals, pauses or changes the target."""

    exe = exe or pyspy_path()
    checked = checked or check_target(pid, exe)
    rate = rate or rate_for(duration)
    self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = clock()
    try:
        procs: dict[int, psutil.Process] = {p.pid: p for p in tree(pid)}
    except psutil.NoSuchProcess:
        raise SamplerError("not-running", "it exited before sampling began", pid) from None
    first = {q: reading(p, 0.0, full=True) for q, p in procs.items()}
    dumps_start, _ = dump_many(exe, list(procs))

    out_file = os.path.join(workdir, "pyspy.speedscope.json")
    log_path = os.path.join(workdir, "pyspy.log")
    cmd = [exe, "record", "--pid", str(pid), "--subprocesses", "--idle", "--nonblocking", "--full-filenames",
           "--format", "speedscope", "--rate", str(round(rate)), "--output", out_file]
    with open(log_path, "wb") as log:
        rec = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=preexec_die_with_parent)
    w0 = clock()
    try:
        loop = _read_while_recording(pid, procs, first, rec, w0, duration, tick, clock, sleep)
        pyspy_cpu = _cpu_s(rec.pid)
        w1 = clock()
        _stop_recording(rec)
    finally:
        if rec.poll() is None:  # interrupted (Ctrl-C, SIGTERM): never leave py-spy attached
            rec.kill()
            rec.wait(timeout=STOP_GRACE_S)
    last = {q: reading(p, w1 - w0, full=True) for q, p in procs.items()}
    alive = [q for q, r in last.items() if r]
    d0 = clock()
    dumps_end, dump_errors = dump_many(exe, alive)
    t_end = clock()
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)

    stacks, counts, log_text = _load_stacks(log_path, out_file, rec, pid, checked)

    return {
        "kind": "attach-record",
        "version": 1,
        "pid": pid,
        "checked": checked,
        "started_unix": time.time() - (t_end - t0),
        "window_s": round(w1 - w0, 3),
        "duration_requested_s": duration,
        "rate_hz": round(rate),
        "processes": [{"pid": q, "first": first.get(q), "last": last.get(q)} for q in procs],
        "readings": loop["readings"],
        "stacks": stacks,
        "dumps": {"start": [{"pid": q, "threads": t} for q, t in dumps_start.items()],
                  "end": [{"pid": q, "threads": t} for q, t in dumps_end.items()],
                  "end_errors": {str(q): first_error_line(e) for q, e in dump_errors.items()}},
        "sampler": {
            "command": " ".join(cmd),
            "exit_code": rec.returncode,
            "ended_early": loop["ended_early"],
            "samples_total": int(counts.group(1)) if counts else None,
            "errors": int(counts.group(2)) if counts else None,
            "pyspy_record_cpu_s": pyspy_cpu,
            "pyspy_all_cpu_s": round((kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime), 4),
            "self_cpu_s": round((self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime), 4),
            "ticks": loop["ticks"], "late_ticks": loop["late"], "lateness_max_s": round(max(0.0, loop["lateness_max"]), 4),
            "tick_s": tick, "total_s": round(t_end - t0, 3), "end_dump_s": round(t_end - d0, 3),
            "log_tail": log_text[-800:],
        },
    }
