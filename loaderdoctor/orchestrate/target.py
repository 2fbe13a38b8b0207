"""What to run: a script, a notebook, or the bundled demo. Validation happens here, in
the parent, before any child starts: bad input fails fast with a clear message."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from loaderdoctor.errors import EXIT_USAGE, LoaderDoctorError
from loaderdoctor.redact import redact_argv

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo", "train_demo.py")


@dataclass
class Target:
    path: str
    kind: str  # script | notebook | demo
    argv: list[str] = field(default_factory=list)  # what the script gets, secrets included
    redact: list[str] = field(default_factory=list)  # more argument names whose values are secret

    def __post_init__(self) -> None:
        self.recorded_argv, self.secrets = redact_argv(self.argv, self.redact)

    def to_dict(self) -> dict:
        """What is recorded: the arguments with secret values as ***."""
        return {"path": self.path, "kind": self.kind, "argv": list(self.recorded_argv)}


def resolve(path: str | None, argv: list[str] | None = None, redact: list[str] | None = None) -> Target:
    argv = list(argv or [])
    redact = list(redact or [])
    if path is None:
        return Target(DEMO, "demo", argv, redact)
    if not os.path.exists(path):
        raise LoaderDoctorError(
            f"{path}: no such file. Give the training script to probe (e.g. `loaderdoctor probe train.py`), "
            "or no target at all to run the bundled demo.", EXIT_USAGE)
    if os.path.isdir(path):
        raise LoaderDoctorError(
            f"{path} is a directory. Give the training script inside it, e.g. "
            f"`loaderdoctor probe {os.path.join(path, 'train.py')}`.", EXIT_USAGE)
    if path.endswith(".ipynb"):
        from loaderdoctor.orchestrate import notebook

        try:
            notebook.validate(path)
        except ValueError as exc:
            raise LoaderDoctorError(f"{path} cannot be probed: {exc}.", EXIT_USAGE) from None
        return Target(os.path.abspath(path), "notebook", argv, redact)
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise LoaderDoctorError(f"{path} cannot be read: {exc.strerror}.", EXIT_USAGE) from None
    if b"\0" in source[:8192]:
        raise LoaderDoctorError(f"{path} is not a Python script (it looks like a binary file).", EXIT_USAGE)
    try:
        compile(source, path, "exec")
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        kind = "is not valid Python" if not path.endswith(".py") else "has a syntax error"
        raise LoaderDoctorError(
            f"{path} {kind} ({where}: {exc.msg}). Fix it so that `python {path}` runs, then probe again.",
            EXIT_USAGE) from None
    except ValueError as exc:
        raise LoaderDoctorError(f"{path} is not a Python script ({exc}).", EXIT_USAGE) from None
    return Target(os.path.abspath(path), "script", argv, redact)
