"""When the stages after the baseline may fork from a warm process (orchestrate/warmstart.py),
and with which imports, decided from what the baseline recorded."""

from __future__ import annotations

from loaderdoctor.orchestrate import warmstart


def _base(before=None, imports=(), imported=True):
    hello = {"e": "hello", "torch": "2.13.0", "torch_import_s": 1.0 if imported else None}
    if before is not None:
        hello["before_torch"] = before
    return {"events": [hello, *[{"e": "import", "m": m, "s": 1.1, "before": b} for m, b in imports]]}


def test_what_keeps_the_stages_cold():
    clean = _base({"env": [], "extensions": []})
    assert warmstart.why_not(clean, "script", None) is None
    assert "notebook" in warmstart.why_not(clean, "notebook", None)
    assert "distributed" in warmstart.why_not(clean, "script", 2)
    assert "did not import torch" in warmstart.why_not(_base(imported=False), "script", None)
    assert "did not import torch" in warmstart.why_not({"events": []}, "script", None)
    pre = {"events": [{"e": "hello", "torch": "2.13.0", "torch_import_s": 0.0, "preloaded": True}]}
    assert "before the script started" in warmstart.why_not(pre, "script", None)


def test_the_plan_repeats_the_scripts_imports_with_the_environment_it_had_then():
    base = _base({"env": ["OMP_NUM_THREADS"], "extensions": ["numpy.x"]},
                 imports=[("torch._dynamo", {"env": ["OMP_NUM_THREADS", "TORCH_LOGS"], "extensions": ["cv2.cv2"]})])
    values = {"torch": {"OMP_NUM_THREADS": "1"}, "torch._dynamo": {"OMP_NUM_THREADS": "1", "TORCH_LOGS": None}}
    steps, why = warmstart.plan(base, values)
    assert why is None
    assert steps == [{"m": "torch", "env": {"OMP_NUM_THREADS": "1"}, "before": ["numpy.x"], "package": False},
                     {"m": "torch._dynamo", "env": {"OMP_NUM_THREADS": "1", "TORCH_LOGS": None}, "before": ["cv2.cv2"],
                      "package": False}]
    # values that did not arrive: torch's ends the plan (cold starts), a lazy part's only drops it
    steps, why = warmstart.plan(base, {"torch": {"OMP_NUM_THREADS": "1"}})
    assert why is None and [s["m"] for s in steps] == ["torch"]
    steps, why = warmstart.plan(base, {})
    assert steps == [] and "did not arrive" in why
    # a warm run's own record (the lazy part was preloaded there): not a step
    steps, _ = warmstart.plan(_base({"env": [], "extensions": []}, imports=[("torch._dynamo", None)]), {})
    assert [s["m"] for s in steps] == ["torch"]


def _ready(**info):
    w = warmstart.WarmStart.__new__(warmstart.WarmStart)
    w.failed, w.proc, w.sock = None, None, None
    w.info = {"ready": True, "torch": "2.13.0", "threads": 1, "os_threads": 2, "torch_os_threads": 2,
              "extensions": ["numpy.core", "numpy.random.mt"], "torch_extensions": ["numpy.core"],
              "new": {"torch": ["numpy.core"], "torch._dynamo": ["numpy.random.mt"]}, **info}
    return w


def _steps(before_torch=(), before_lazy=None):
    steps = [{"m": "torch", "env": {}, "before": list(before_torch)}]
    if before_lazy is not None:
        steps.append({"m": "torch._dynamo", "env": {}, "before": list(before_lazy)})
    return steps


def test_a_warm_process_stands_in_only_when_it_matches_the_baseline():
    assert _ready().usable("2.13.0", _steps(["numpy.core"], [])) == (None, [])
    assert "2.14.1" in _ready(torch="2.14.1").usable("2.13.0", _steps())[0]
    why, _ = _ready(threads=2).usable("2.13.0", _steps())
    assert "threads" in why
    why, _ = _ready().usable("2.13.0", _steps(["cv2.cv2"]))
    assert "cv2.cv2" in why and "before torch" in why
    failed = _ready()
    failed.failed = "did not become ready"
    assert "did not become ready" in failed.usable("2.13.0", _steps())[0]


def test_a_lazy_part_is_dropped_only_when_preloading_it_could_change_a_native_load_order():
    # it loads only more of a package torch loaded (numpy): fine whatever the script loaded first
    assert _ready().usable("2.13.0", _steps([], ["PIL._imaging"])) == (None, [])
    # it loads a package of its own, after the script had loaded an extension the warm process lacks
    own = _ready(new={"torch": [], "torch._dynamo": ["sympy_native.core"]}, extensions=["numpy.core", "sympy_native.core"])
    assert own.usable("2.13.0", _steps([], ["PIL._imaging"])) == (None, ["torch._dynamo"])
    assert own.usable("2.13.0", _steps([], [])) == (None, [])
    # a lazy part that would not import in the warm process: start again without it
    broke = _ready(ready=False, failed_step="torch._dynamo", error="ImportError()")
    broke.failed = "could not import torch._dynamo (ImportError())"
    assert broke.usable("2.13.0", _steps([], [])) == (None, ["torch._dynamo"])
    broke.info["failed_step"] = "torch"
    assert "could not import torch" in broke.usable("2.13.0", _steps([], []))[0]
    # threads started by a preloaded lazy part: start again without it
    counts = [{"m": "torch", "threads": 1, "os_threads": 2}, {"m": "torch._dynamo", "threads": 1, "os_threads": 3}]
    assert _ready(steps=counts).usable("2.13.0", _steps([], [])) == (None, ["torch._dynamo"])


def test_the_plan_imports_the_scripts_installed_packages_after_torch_each_under_its_environment():
    base = _base({"env": [], "extensions": []}, imports=[("torch._dynamo", {"env": [], "extensions": []})])
    base["events"].append({"e": "packages", "names": ["monai", "cv2", "scipy"], "where": ["/sp/monai", "/sp/cv2", "/sp/scipy"],
                           "env": [[], ["LD_LIBRARY_PATH"], ["LD_LIBRARY_PATH", "SECRET"]], "stopped": "mylib ..."})
    values = {"cv2": {"LD_LIBRARY_PATH": "/x"}, "scipy": {"LD_LIBRARY_PATH": "/x", "SECRET": "s"}}
    steps, why = warmstart.plan(base, values)
    assert why is None
    assert [(s["m"], s["env"], s["package"]) for s in steps] == [
        ("torch", {}, False), ("monai", {}, True), ("cv2", {"LD_LIBRARY_PATH": "/x"}, True),
        ("scipy", {"LD_LIBRARY_PATH": "/x", "SECRET": "s"}, True), ("torch._dynamo", {}, False)]
    assert [s.get("where") for s in steps] == [None, "/sp/monai", "/sp/cv2", "/sp/scipy", None]  # checked there
    # a package whose values did not arrive ends the plan there: the script's order is kept as a prefix
    steps, _ = warmstart.plan(base, {"cv2": {"LD_LIBRARY_PATH": "/x"}})
    assert [s["m"] for s in steps] == ["torch", "monai", "cv2"]


def test_a_package_may_bring_native_pools_but_not_a_python_thread():
    steps = [*_steps(), {"m": "monai", "env": {}, "before": [], "package": True},
             {"m": "wandb", "env": {}, "before": [], "package": True},
             {"m": "torch._dynamo", "env": {}, "before": [], "package": False}]
    pools = [{"m": "torch", "threads": 1, "os_threads": 2}, {"m": "monai", "threads": 1, "os_threads": 4},
             {"m": "wandb", "threads": 1, "os_threads": 4}, {"m": "torch._dynamo", "threads": 1, "os_threads": 4}]
    assert _ready(steps=pools).usable("2.13.0", steps) == (None, [])  # OpenBLAS-like pools: kept
    threaded = [dict(c) for c in pools]
    threaded[2]["threads"] = threaded[3]["threads"] = 2  # wandb started a Python thread
    assert _ready(steps=threaded).usable("2.13.0", steps) == (None, ["wandb", "torch._dynamo"])
    named = [dict(c) for c in pools]
    named[2]["named_threads"] = named[3]["named_threads"] = 1  # wandb started a native thread with a name of its own
    assert _ready(steps=named).usable("2.13.0", steps) == (None, ["wandb", "torch._dynamo"])
    cuda = [dict(c) for c in pools]
    cuda[1]["cuda"] = True  # monai's import initialised CUDA: it and what follows are left out
    assert _ready(steps=cuda).usable("2.13.0", steps) == (None, ["monai", "wandb", "torch._dynamo"])
    torch_threaded = [{"m": "torch", "threads": 2, "os_threads": 3}]
    assert "threads" in _ready(steps=torch_threaded).usable("2.13.0", steps)[0]


def test_the_line_protocol_passes_over_a_stale_exit_and_matches_the_runner(tmp_path):
    import os
    import socket

    ours, theirs = socket.socketpair()
    w = warmstart.WarmStart.__new__(warmstart.WarmStart)
    w.failed, w.proc, w.sock, w.buf, w.info = None, None, ours, b"", {}
    r, wfd = os.pipe()
    try:
        with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
            # the exit of a stage given up on arrives before the answer to the next request
            theirs.sendall(b'{"pid": 5, "exit": 0}\n{"pid": 9}\n')
            run = w.start("/spec.json", {"A": "1"}, "/", wfd, out, err)
        assert run is not None and run.pid == 9
        data, fds, _, _ = socket.recv_fds(theirs, 1 << 16, 3)
        assert len(fds) == 3 and b'"spec": "/spec.json"' in data
        for fd in fds:
            os.close(fd)
        assert run.poll() is None  # nothing yet: a poll does not wait
        theirs.sendall(b'{"pid": 4, "exit": 1}\n{"pid": 9, "exit": -9}\n')
        assert run.wait(timeout=5) == -9
        theirs.close()  # the warm process is gone: a runner still waited on counts as killed
        late = warmstart.Forked(w, 11)
        assert late.wait(timeout=5) == -9 and w.failed == "ended"
    finally:
        for fd in (r, wfd):
            os.close(fd)
        ours.close()
