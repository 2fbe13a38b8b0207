"""Notebooks, the child's side: the runner drives a real Jupyter kernel through nbclient, and
the kernel installs the same Recorder and hooks as the runner, with events written to a
FIFO that the runner relays to the parent."""

from __future__ import annotations

import dataclasses
import os
import re
import threading

from loaderdoctor.frames import traceback_frames
from loaderdoctor.protocol import RunnerSpec

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in nbclient's error text


def relay(fifo: str, emit) -> threading.Thread:
    """Forward every line the kernel writes to `fifo` to the runner's emitter."""

    def run() -> None:
        try:
            with open(fifo, "rb") as f:  # blocks until the kernel opens it for writing
                for line in f:
                    emit(line.decode("utf-8", "replace").rstrip("\n"))
        except OSError:
            pass

    t = threading.Thread(target=run, name="loaderdoctor-relay", daemon=True)
    t.start()
    return t


def run_notebook(spec: RunnerSpec, emit) -> tuple[str, int, dict | None]:
    """Execute the notebook in a kernel. Returns (how, code, exception record)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = spec.target
    stage_dir = spec.stage_dir
    fifo = os.path.join(stage_dir, "events.fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    relay(fifo, emit)
    spec_path = os.path.join(stage_dir, "kernel-spec.json")
    dataclasses.replace(spec, event_fifo=fifo).save(spec_path)
    nb = nbformat.read(path, as_version=4)
    setup = nbformat.v4.new_code_cell(f"import loaderdoctor.child.kernel as _loaderdoctor\n"
                                      f"_loaderdoctor.kernel_setup({spec_path!r})")
    nb.cells.insert(0, setup)
    os.environ["PYTHONUNBUFFERED"] = "1"
    client = NotebookClient(nb, timeout=None, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    try:
        client.execute()
        return "finished", 0, None
    except CellExecutionError as exc:
        if exc.ename == "StopProbe":
            return "stopped", 0, None
        if exc.ename == "SystemExit":
            return "sysexit", 1, None
        tb = _ANSI.sub("", str(exc))
        return "exception", 1, {"type": exc.ename, "module": None, "message": _ANSI.sub("", exc.evalue or ""),
                                "traceback": tb, "frames": traceback_frames(tb)}


def kernel_setup(spec_path: str) -> None:
    """Run as the notebook's first cell: hooks in, events out through the FIFO."""
    from loaderdoctor.child import patches, recorder, worker
    from loaderdoctor.child.cuda import gpu_gaps
    from loaderdoctor.child.emitter import Emitter, leave_hook

    spec = RunnerSpec.load(spec_path)
    emit = Emitter(os.open(spec.event_fifo, os.O_WRONLY))
    if spec.stack_dir:
        worker.enable_stack_file(spec.stack_dir, "main")
    gaps = gpu_gaps()  # imports torch: a notebook's kernel has the hooks in before the first cell
    emit.json(recorder.hello(kernel=True))
    from loaderdoctor import lifeline

    lifeline.die_with_parent()  # the kernel follows the runner that started it
    rec = recorder.recorder_from_spec(spec, emit, gaps)
    rec.finish_hook = leave_hook(emit)
    patches.install(rec)
    try:  # the kernel outlives each cell: a cell's last batch events go out when it ends
        get_ipython().events.register("post_run_cell", lambda *_: emit.flush())  # noqa: F821
    except NameError:
        pass
