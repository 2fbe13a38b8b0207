"""Output paths checked before any work starts: a bad one is a usage error (exit 2).

`check_out_dir` for `--out DIR` (probe, check, attach, report merge), `check_out_file` for
`--junit-xml FILE` and `report --out FILE`. Each returns the absolute path, or raises
LoaderDoctorError(one paragraph, EXIT_USAGE) naming the path, the reason the system gave
and what to do. Writability is tested by creating and deleting a file, since permission
bits say little (root ignores them; a read-only mount or an immutable folder does not).
"""

from __future__ import annotations

import os
import tempfile

from loaderdoctor.errors import EXIT_USAGE, LoaderDoctorError
from loaderdoctor.textsafe import clean

__all__ = ["check_out_dir", "check_out_file"]


def _fail(option: str, path: str, why: str, fix: str) -> LoaderDoctorError:
    return LoaderDoctorError(f"Cannot write to {option} {clean(path)}: {clean(why)}. {fix}", EXIT_USAGE)


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _probe_writable(folder: str) -> None:
    fd, probe = tempfile.mkstemp(prefix=".loaderdoctor-write-test-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_out_dir(path: str, option: str = "--out") -> str:
    """The absolute path of an output folder that exists (created, parents too) and is writable."""
    p = os.path.abspath(os.path.expanduser(path))
    fix = f"Pass {option} a folder you can write to (it is created if missing)."
    if os.path.exists(p) and not os.path.isdir(p):
        raise _fail(option, p, "it is an existing file, not a folder", fix)
    try:
        os.makedirs(p, exist_ok=True)
    except OSError as exc:
        raise _fail(option, p, f"the folder could not be created ({_reason(exc)})", fix) from None
    try:
        _probe_writable(p)
    except OSError as exc:
        raise _fail(option, p, f"the folder is not writable ({_reason(exc)})", fix) from None
    return p


def check_out_file(path: str, option: str = "--junit-xml") -> str:
    """The absolute path of an output file whose folder exists and is writable.

    The file itself is not created; an existing regular file must be writable.
    """
    p = os.path.abspath(os.path.expanduser(path))
    parent = os.path.dirname(p)
    fix = f"Pass {option} a file path in an existing folder you can write to."
    if os.path.isdir(p):
        raise _fail(option, p, "it is a folder, not a file", f"Name a file inside it, e.g. {clean(p)}/result.xml.")
    if not os.path.exists(parent):
        raise _fail(option, p, f"its folder {parent} does not exist", fix + " Create the folder first.")
    if not os.path.isdir(parent):
        raise _fail(option, p, f"{parent} is a file, not a folder", fix)
    try:
        _probe_writable(parent)
        if os.path.isfile(p):
            with open(p, "ab"):  # opens for writing without changing a byte
                pass
    except OSError as exc:
        raise _fail(option, p, f"it is not writable ({_reason(exc)})", fix) from None
    return p
