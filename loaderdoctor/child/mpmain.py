"""What a spawn or forkserver worker imports as `__mp_main__` in place of the user's script.

`python train.py` with the spawn or forkserver start method makes every worker (and the
forkserver) re-import the script as `__mp_main__`: an unguarded top level runs again there.
The runner points multiprocessing at this file instead (runner.point_workers_here); this
file runs the user's script exactly as multiprocessing would, under a guard: while the
re-import is under way (multiprocessing's `_inheriting` flag), iterating a DataLoader or
taking an optimizer step means the worker is running the user's training. The guard then
writes what it saw (rerun-<pid>.json in the stage folder, with the user's frame) and ends
the worker at once: no stage lets a worker run the user's training, and the parent reports
the re-run instead of an "ok".
"""

import json
import os
import runpy
import sys
from multiprocessing import process

MAIN_PATH_ENV = "LOADERDOCTOR_MAIN_PATH"
STAGE_DIR_ENV = "LOADERDOCTOR_STAGE_DIR"
RERUN_EXIT_CODE = 3


def _inheriting() -> bool:
    return bool(getattr(process.current_process(), "_inheriting", False))


def _user_frame() -> dict | None:
    from loaderdoctor.frames import is_user_file

    f = sys._getframe(2)
    while f is not None:
        if is_user_file(f.f_code.co_filename) and not f.f_code.co_filename.endswith("mpmain.py"):
            return {"function": f.f_code.co_name, "file": f.f_code.co_filename, "line": f.f_lineno}
        f = f.f_back
    return None


def _caught(what: str) -> None:
    stage_dir = os.environ.get(STAGE_DIR_ENV)
    if stage_dir:
        record = {"pid": os.getpid(), "what": what, "frame": _user_frame(),
                  "process": process.current_process().name}
        try:
            with open(os.path.join(stage_dir, f"rerun-{os.getpid()}.json"), "w") as f:
                json.dump(record, f)
        except OSError:
            pass
    sys.stderr.write(f"loaderdoctor: this worker re-ran the script's top level and {what}; ended.\n")
    sys.stderr.flush()
    os._exit(RERUN_EXIT_CODE)


def _guard() -> list:
    """Patch the two signs of training; returns what to restore."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    from torch.utils.data import DataLoader

    orig_iter = DataLoader.__iter__

    def __iter__(self):
        if _inheriting():
            _caught("iterated a DataLoader")
        return orig_iter(self)

    def pre_step(optimizer, args, kwargs):
        if _inheriting():
            _caught("took an optimizer step")

    DataLoader.__iter__ = __iter__
    handle = register_optimizer_step_pre_hook(pre_step)
    return [lambda: setattr(DataLoader, "__iter__", orig_iter), handle.remove]


def _run() -> dict:
    path = os.environ[MAIN_PATH_ENV]
    undo = _guard() if _inheriting() else []
    try:
        return runpy.run_path(path, run_name="__mp_main__")
    finally:
        for u in undo:
            u()


if __name__ == "__mp_main__":
    _user_globals = _run()
    # The script's names become this module's (pickles refer to __main__.Name); __file__ stays
    # this file's, so a forkserver's children see their main module already loaded.
    _KEEP = ("__name__", "__spec__", "__loader__", "__file__", "__cached__")
    globals().update({k: v for k, v in _user_globals.items() if k not in _KEEP})
