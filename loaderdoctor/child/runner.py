"""The runner child: `python -m loaderdoctor.child.runner SPEC.json`.

Runs the user's target exactly as `python train.py ARGS` would (__name__ == "__main__",
__file__, sys.argv, sys.path[0]; spawn/forkserver workers re-import it as __mp_main__),
with the hooks installed, and streams events to the parent on the fd named in
LOADERDOCTOR_EVENT_FD. It never writes a report: only the parent does."""

from __future__ import annotations

import json
import os
import sys
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
    from loaderdoctor.child import recorder, worker

    stack_dir = spec.stack_dir
    if stack_dir:
        worker.enable_stack_file(stack_dir, "main")
    path = spec.target
    real = os.environ.pop(ARGV_ENV, None)  # not inherited by the workers
    sys.argv = [path, *(json.loads(real) if real is not None else spec.argv)]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    point_workers_here(path, spec.stage_dir)
    said_hello = _hook_torch(spec, emit)
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
    if not said_hello:  # the script ended before it imported torch
        emit.json(recorder.hello(torch_import_s=None, preloaded=False, **distrank.identity()))
    emit.json({"e": "exit", "how": how, "code": code, "exc": exc_rec})
    return code


def _hook_torch(spec: RunnerSpec, emit: Emitter) -> list:
    """Hooks in when the script's import of torch completes (child/torchhook.py), with the hello
    event; the first import of torch's heavy lazy parts is reported too. What the script did
    before each goes with them; the values of the environment variables it set go in an "env"
    event of their own, which the parent keeps in memory for a warm start (they may be secret)
    and never writes. Returns a list that is non-empty once hello was said."""
    from loaderdoctor.child import recorder, torchhook

    said_hello: list[bool] = []

    def split(name: str, before: dict | None) -> None:
        values = before.pop("values", None) if before else None
        if values and distrank.rank() is None:
            emit.json({"e": "env", "m": name, "values": values})

    def on_torch(import_s: float, before: dict | None) -> None:
        # torch is loaded (by the script, or by a warm start before it): hooks in, before the
        # statement that imported it goes on
        split("torch", before)
        hello = {"torch_import_s": round(import_s, 3), "preloaded": before is None}
        if before is not None:
            hello["before_torch"] = before
        emit.json(recorder.hello(**hello, **distrank.identity()))
        said_hello.append(True)
        rec = install_hooks(spec, emit)
        watch = torchhook.watch_packages(snap) if distrank.rank() is None else None  # plain scripts only
        if watch is not None:  # what a warm start may import ahead
            rec.first_iter = lambda: _say_packages(watch, emit)

    def on_lazy(name: str, import_s: float, before: dict | None) -> None:
        split(name, before)
        emit.json({"e": "import", "m": name, "s": round(import_s, 3), "before": before})

    snap = torchhook.snapshot()
    torchhook.after_import("torch", on_torch, snap)
    for name in torchhook.PRELOADABLE:
        torchhook.after_import(name, lambda s, b, name=name: on_lazy(name, s, b), snap)
    return said_hello


def _say_packages(watch, emit: Emitter) -> None:
    try:
        event, values = watch.finish()
    except Exception as exc:  # never the script's problem: the stages after it start without its packages
        event, values = {"e": "packages", "names": [], "stopped": f"not recorded ({type(exc).__name__})"}, []
    for ev in values:
        emit.json(ev)
    emit.json(event)


def install_hooks(spec: RunnerSpec, emit: Emitter):
    from loaderdoctor.child import patches, recorder

    rec = recorder.recorder_from_spec(spec, emit, gpu_gaps())
    rec.finish_hook = leave_hook(emit)
    patches.install(rec)
    if distrank.rank() is not None:
        distrank.time_backward(rec)
    return rec


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
