"""Pure: what a crashed stage tells us. Input is the raw stage record (the runner's
exception, fatal-signal dumps the workers left, the runner's return code)."""

from __future__ import annotations

import re
import signal

from loaderdoctor.frames import _TB_FRAME, is_user_file

_KILLED = re.compile(r"DataLoader worker \(pid (\d+)\) is killed by signal: ([^.\n]+)")
_EXIT_CODE = re.compile(r"DataLoader worker \(pid (\d+)\) exited unexpectedly with exit code (-?\d+)")
_EXITED = re.compile(r"DataLoader worker \(pid\(s\) ([\d, ]+)\) exited unexpectedly")
_CAUGHT = re.compile(r"Caught (\w+) in DataLoader worker process (\d+)\.")
_SHM = ("No space left on device", "out of shared memory", "Bus error", "unable to write to file </torch_")


def _signal_names() -> dict[str, str]:
    names = {}
    for s in signal.Signals:
        try:
            text = signal.strsignal(s)
        except (ValueError, OSError):
            text = None
        if text and s.name.startswith("SIG") and not s.name.startswith("SIG_"):
            names.setdefault(text, s.name)
    return names


SIGNAL_NAMES = _signal_names()


def _signum(name: str | None) -> int:
    """The number of a signal named like SIGSEGV (0 when unknown)."""
    sig = getattr(signal, name, None) if name else None
    return int(sig) if sig is not None else 0


def _oom(sig: str | None, oom_kills: dict | None) -> dict:
    rose = sig == "SIGKILL" and bool(oom_kills)
    return {"oom": rose, "oom_record": dict(oom_kills) if rose else None}


def signal_from_text(text: str) -> str | None:
    text = text.strip()
    return SIGNAL_NAMES.get(text) or (text if text.startswith("SIG") else None)


def culprit_from_frames(frames: list[dict], role: str, pid: int | None) -> dict | None:
    """Innermost frame in the user's own code (frames innermost first)."""
    for f in frames:
        if is_user_file(f.get("file")):
            return {"role": role, "pid": pid, "function": f.get("function"), "file": f.get("file"),
                    "line": f.get("line")}
    return None


def parse_worker_traceback(message: str) -> tuple[list[dict], str | None, str | None]:
    """From torch's "Caught X in DataLoader worker process K. Original Traceback ..." text:
    (frames innermost first, exception type, exception message)."""
    frames = []
    lines = message.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Original Traceback")), None)
    if start is None:
        return [], None, None
    body = lines[start + 1:]
    for ln in body:
        m = _TB_FRAME.match(ln)
        if m:
            frames.append({"function": m.group(3), "file": m.group(1), "line": int(m.group(2))})
    exc_type = exc_msg = None
    for ln in reversed(body):
        if ln and not ln.startswith(" "):
            head, _, rest = ln.partition(":")
            exc_type, exc_msg = head.strip().rsplit(".", 1)[-1], rest.strip()
            break
    frames.reverse()
    return frames, exc_type, exc_msg


def signal_name(code: int | None) -> str | None:
    """SIGxxx for a negative exit code (killed by that signal), else None."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def classify(stage: str, exc: dict | None, returncode: int | None, fatal_dumps: list[dict],
             oom_kills: dict | None = None, worker_exits: dict | None = None) -> dict | None:
    """A crash record (CONTRACT.md crashes[]), or None when nothing crashed.

    fatal_dumps: [{pid, role, error, frames}] from faulthandler files ("Fatal Python error").
    oom_kills: the kernel's OOM-kill counters that rose during the stage ({source: increase}):
    a process killed by SIGKILL while one rose gets `oom` with them as `oom_record`.
    """
    by_pid = {d["pid"]: d for d in fatal_dumps}
    exits = {int(k): v for k, v in (worker_exits or {}).items()}
    if exc is None:
        if returncode is not None and returncode < 0:
            sig = signal_name(returncode)
            main_dump = next((d for d in fatal_dumps if d.get("role") == "main"), None)
            frames = main_dump["frames"] if main_dump else []
            return {"stage": stage, "role": "main", "signal": sig, "exit_code": None, "exception_type": None,
                    "message": f"the script's process was killed by {sig or returncode}",
                    "culprit": culprit_from_frames(frames, "main", main_dump and main_dump["pid"]),
                    "frames": frames, "shm": False, **_oom(sig, oom_kills)}
        return None
    message = exc.get("message") or ""
    rec = {"stage": stage, "role": "main", "signal": None, "exit_code": None,
           "exception_type": exc.get("type"), "message": message, "culprit": None,
           "frames": exc.get("frames") or [], "oom": False, "oom_record": None, "shm": any(s in message for s in _SHM),
           "pid": None}
    m = _KILLED.search(message)
    if m:
        pid = int(m.group(1))
        sig = signal_from_text(m.group(2))
        dump = by_pid.get(pid)
        frames = dump["frames"] if dump else []
        rec.update(role="worker", pid=pid, signal=sig, exception_type=None, frames=frames,
                   message=m.group(0), culprit=culprit_from_frames(frames, "worker", pid))
        rec.update(_oom(sig, oom_kills))
        rec["shm"] = sig == "SIGBUS" or rec["shm"]
        return rec
    m = _EXIT_CODE.search(message)
    if m:
        rec.update(role="worker", pid=int(m.group(1)), exit_code=int(m.group(2)), exception_type=None,
                   message=m.group(0), frames=[])
        return rec
    m = _CAUGHT.search(message)
    if m:
        frames, etype, emsg = parse_worker_traceback(message)
        rec.update(role="worker", exception_type=etype or m.group(1), message=emsg if emsg is not None else message,
                   frames=frames, worker_id=int(m.group(2)), worker_traceback=message,
                   culprit=culprit_from_frames(frames, "worker", None))
        return rec
    m = _EXITED.search(message)
    if m:
        pids = [int(p) for p in m.group(1).replace(" ", "").split(",") if p]
        pid = pids[0] if pids else None
        dump = next((by_pid[p] for p in pids if p in by_pid), None)
        frames = dump["frames"] if dump else []
        code = exits.get(pid) if pid is not None else None
        sig = signal_name(code)
        rec.update(role="worker", pid=pid, exception_type=None, message=m.group(0), frames=frames,
                   signal=sig, exit_code=code if sig is None else None,
                   culprit=culprit_from_frames(frames, "worker", pid))
        rec.update(_oom(sig, oom_kills))
        rec["shm"] = sig == "SIGBUS" or rec["shm"]
        return rec
    dead = [(pid, code) for pid, code in exits.items() if code is not None and code < 0]
    if not dead:  # the worker was not reaped in time to read its exit code: its fatal-signal dump tells
        dead = [(d["pid"], -_signum(signal_from_text(d.get("error") or ""))) for d in fatal_dumps
                if d.get("role") == "worker" and _signum(signal_from_text(d.get("error") or ""))]
    if dead:  # the loader failed with another error (e.g. a reset pipe) while a worker died by a signal
        pid, code = dead[0]
        sig = signal_name(code)
        dump = by_pid.get(pid)
        frames = dump["frames"] if dump else []
        rec.update(role="worker", pid=pid, signal=sig, exception_type=None, frames=frames,
                   message=f"DataLoader worker (pid {pid}) was killed by {sig}; the main process then saw "
                           f"{exc.get('type')}: {message}",
                   culprit=culprit_from_frames(frames, "worker", pid))
        rec.update(_oom(sig, oom_kills))
        rec["shm"] = sig == "SIGBUS" or rec["shm"]
        return rec
    rec["culprit"] = culprit_from_frames(rec["frames"], "main", None)
    return rec
