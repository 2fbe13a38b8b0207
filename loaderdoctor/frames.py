"""One frame shape, {function, file, line} (innermost first wherever a list of them is kept);
where code lives (the user's own files vs the standard library, site-packages, torch, us);
and the parsers that turn stack text (faulthandler dumps, tracebacks) into frames."""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import traceback
from dataclasses import dataclass, field

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


_DEMO_DIR = os.path.join(_PKG_DIR, "demo")


def _library_roots() -> tuple[str, ...]:
    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            roots.add(os.path.realpath(p))
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        roots.add(os.path.realpath(os.path.join(prefix, "lib")))
    return tuple(sorted(roots))


_ROOTS = _library_roots()


def is_user_file(path: str | None) -> bool:
    """True for a file the user wrote: not stdlib, not installed packages, not loaderdoctor
    itself (except the bundled demo, which plays the user's part)."""
    if not path or path.startswith("<"):
        return False
    real = os.path.realpath(path)
    if real.startswith(_DEMO_DIR + os.sep):
        return True
    if real.startswith(_PKG_DIR + os.sep):
        return False
    if "site-packages" in real or "dist-packages" in real:
        return False
    return not any(real.startswith(root + os.sep) for root in _ROOTS)


def short_path(path: str, base: str | None = None) -> str:
    base = base or os.getcwd()
    try:
        rel = os.path.relpath(path, base)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


@dataclass
class ThreadStack:
    name: str | None
    frames: list[dict]  # innermost first: {function, file, line}


@dataclass
class ProcessStack:
    pid: int
    role: str
    threads: list[ThreadStack] = field(default_factory=list)


_FH_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-f]+)")


_FH_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.+)$')


DUMP_MARKER = "--- loaderdoctor: stack dump requested ---"


def parse_faulthandler(text: str) -> list[tuple[str | None, list[ThreadStack]]]:
    """Split faulthandler output into dumps: (fatal error or None, threads). A dump starts
    at a "Fatal Python error" line or at the marker the parent writes before SIGUSR1."""
    dumps: list[tuple[str | None, list[ThreadStack]]] = []
    threads: list[ThreadStack] | None = None
    for line in text.splitlines():
        if line.startswith("Fatal Python error:") or line.startswith(DUMP_MARKER):
            fatal = line.split(":", 1)[1].strip() if line.startswith("Fatal") else None
            threads = []
            dumps.append((fatal, threads))
            continue
        m = _FH_THREAD.match(line)
        if m:
            if threads is None:
                threads = []
                dumps.append((None, threads))
            current = m.group(1).startswith("Current")
            threads.append(ThreadStack("current" if current else m.group(2), []))
            continue
        m = _FH_FRAME.match(line)
        if m and threads:
            threads[-1].frames.append({"function": m.group(3), "file": m.group(1), "line": int(m.group(2))})
    return dumps


_TB_FRAME = re.compile(r'^\s*File "(.*)", line (\d+), in (.+)$')


_TB = re.compile(r'^\s*File "?([^",]+)"?, line (\d+), in (.+)$|^(\S+\.py):(\d+), in (.+)$')


def traceback_frames(tb: str) -> list[dict]:
    frames = []
    for line in tb.splitlines():
        m = _TB.match(line)
        if m:
            g = m.groups()
            file, lineno, fn = (g[0], g[1], g[2]) if g[0] else (g[3], g[4], g[5])
            frames.append({"function": fn.strip(), "file": file, "line": int(lineno)})
    frames.reverse()
    return frames


def exception_record(exc: BaseException) -> dict:
    frames = []
    for fs in reversed(traceback.extract_tb(exc.__traceback__)):  # innermost first
        frames.append({"function": fs.name, "file": fs.filename, "line": fs.lineno})
    return {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "frames": frames,
    }
