"""The runner child: `python -m loaderdoctor.child.runner SPEC.json`.

Runs the user's target exactly as `python train.py ARGS` would (__name__ == "__main__",
__file__, sys.argv, sys.path[0]; spawn/forkserver workers re-import it as __mp_main__),
with the hooks installed, and streams events to the parent on the fd named in
LOADERDOCTOR_EVENT_FD. It never writes a report: only the parent does."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from loaderdoctor import lifeline
from loaderdoctor.child import distrank
from loaderdoctor.child.cuda import gpu_gaps
from loaderdoctor.child.emitter import Emitter, leave_hook
from loaderdoctor.frames import exception_record
from loaderdoctor.protocol import ARGV_ENV, PARENT_PID_ENV, RunnerSpec


def _quiet_sigchld() -> None:
    """The script is over: stop torch's SIGCHLD handler from raising again (a second worker
    ending) while the outcome is recorded. Nothing of the script runs after this."""
    import signal

    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def point_workers_here(script: str, stage_dir: str) -> None:
    """Spawn and forkserver workers re-import the main script as __mp_main__, as they would
    under `python script.py`; make them import it through child/mpmain.py, which runs it the
    same way but ends a worker that starts the user's training (see mpmain)."""
    import multiprocessing.spawn as mp_spawn

    from loaderdoctor.child import mpmain

    os.environ[mpmain.MAIN_PATH_ENV] = script
    os.environ[mpmain.STAGE_DIR_ENV] = stage_dir
    orig = mp_spawn.get_preparation_data

    def get_preparation_data(name):
        data = orig(name)
        if data.get("init_main_from_path") == script:
            data["init_main_from_path"] = mpmain.__file__
        return data

    mp_spawn.get_preparation_data = get_preparation_data


def run(spec: RunnerSpec, emit: Emitter) -> int:
    if spec.kind == "notebook":
        from loaderdoctor.child import kernel

        how, code, exc_rec = kernel.run_notebook(spec, emit)
        emit.json({"e": "exit", "how": how, "code": code, "exc": exc_rec})
        return code
    from loaderdoctor.child import patches, recorder, worker

    stack_dir = spec.stack_dir
    if stack_dir:
        worker.enable_stack_file(stack_dir, "main")
    t = time.perf_counter()
    import torch  # noqa: F401  (timed: the import is part of every stage's start-up)

    emit.json(recorder.hello(torch_import_s=round(time.perf_counter() - t, 3), **distrank.identity()))
    rec = recorder.recorder_from_spec(spec, emit, gpu_gaps())
    rec.finish_hook = leave_hook(emit)
    patches.install(rec)
    if distrank.rank() is not None:
        distrank.time_backward(rec)

    path = spec.target
    real = os.environ.pop(ARGV_ENV, None)  # not inherited by the workers
    sys.argv = [path, *(json.loads(real) if real is not None else spec.argv)]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    point_workers_here(path, spec.stage_dir)
    import runpy

    how, code, exc_rec = "finished", 0, None
    try:
        runpy.run_path(path, run_name="__main__")
    except recorder.StopProbe:
        how = "stopped"
    except SystemExit as exc:
        how = "sysexit"
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException as exc:  # the script's own failure: recorded, not ours to raise
        _quiet_sigchld()
        how, code = "exception", 1
        try:
            exc_rec = exception_record(exc)
            traceback.print_exc()
        except BaseException:  # a late signal while formatting: keep the essentials
            exc_rec = {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc),
                       "traceback": "", "frames": []}
    emit.json({"e": "exit", "how": how, "code": code, "exc": exc_rec})
    return code


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    lifeline.die_with_parent()
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and os.getppid() != int(parent):  # loaderdoctor died before the death signal was set
        os._exit(1)
    spec = RunnerSpec.load(argv[0])
    emit = Emitter(distrank.event_fd(), rank=distrank.rank())
    code = run(spec, emit)
    lifeline.leave(code)  # no teardown: joining the script's workers or threads could hang


if __name__ == "__main__":
    main()
