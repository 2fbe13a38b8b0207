"""Where code lives: the user's own files vs the standard library, site-packages, torch, us."""

from __future__ import annotations

import os
import sys
import sysconfig

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
