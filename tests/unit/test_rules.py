"""Every finding, driven from hand-built sessions (no process runs), evidence checked."""

import pytest

from loaderdoctor.analysis.report import build_report
from loaderdoctor.session import Session

SITE = "train.py:20"


def loader_event(nw=0, persistent=False, prefetch=None, method=None, instances=1):
    cfg = {"num_workers": nw, "batch_size": 8, "persistent_workers": persistent, "prefetch_factor": prefetch,
           "start_method": method, "pin_memory": False, "dataset": "__main__.Rows", "dataset_len": 800}
    return [{"e": "loader", "l": 0, "site": SITE, "config": cfg, "overridden": None}] * instances


def steps(n, wait, compute, iterators=1, startup=0.05, samples=8):
    ev = []
    for it in range(iterators):
        ev.append({"e": "it", "l": 0, "t": 0.0, "workers": [], "threads": [], "cuda_init": False})
        ev.append({"e": "b", "l": 0, "i": 0, "w": startup, "c": None, "n": samples, "s": startup})
        for i in range(1, n):
            ev.append({"e": "b", "l": 0, "i": i, "w": wait, "c": compute, "n": samples})
        ev.append({"e": "end", "l": 0, "c": compute, "why": "epoch"})
    return ev


def stage(name, events, status="ok", detail="", **extra):
    return {"name": name, "status": status, "seconds": 1.0, "detail": detail, "events": events, "exit": None,
            "returncode": 0, "hang": None, "fatal_dumps": [], "oom_kills": {}, **extra}


def session(stages, notes=None, **env):
    environment = {"cpu_count_effective": 2, **env}
    return Session(target={"path": "train.py", "kind": "script", "argv": []}, options={"warmup": 3},
                   environment=environment, stages=stages, notes=notes or {})


def findings(s):
    r = build_report(s)
    return r, {f["id"]: f for f in r["findings"]}


def test_data_bound():
    r, f = findings(session([stage("baseline", loader_event() + steps(40, 0.09, 0.01))]))
    assert r["verdict"] == "data-bound"
    assert "waited for data 90% of the time" in f["data-bound"]["evidence"]
    assert "36 measured steps" in f["data-bound"]["evidence"]


def test_compute_bound():
    r, f = findings(session([stage("baseline", loader_event() + steps(40, 0.001, 0.1))]))
    assert r["verdict"] == "compute-bound"
    assert "waited for data 1% of the time" in f["compute-bound"]["evidence"]
    assert "data-bound" not in f


def test_balanced_has_no_bound_finding():
    r, f = findings(session([stage("baseline", loader_event() + steps(40, 0.01, 0.09))]))
    assert r["verdict"] == "balanced" and "data-bound" not in f and "compute-bound" not in f


def test_hang_names_the_culprit_and_threads_at_fork():
    ev = loader_event(nw=2, method="fork") + [
        {"e": "it", "l": 0, "t": 0, "workers": [11, 12], "threads": ["metrics-flusher"], "cuda_init": False}]
    hang = {"stage": "baseline", "method": "py-spy", "idle_s": 6.0, "capture_s": 0.1,
            "culprit": {"role": "worker", "pid": 11, "function": "__getitem__", "file": "train.py", "line": 9},
            "processes": [{"pid": 10, "role": "main", "frames": []}, {"pid": 11, "role": "worker", "frames": []}]}
    r, f = findings(session([stage("baseline", ev, status="hang", detail="no progress for 6.0 s", hang=hang)]))
    assert r["verdict"] == "hang"
    e = f["hang"]["evidence"]
    assert "No batch or event for 6.0 s" in e and "__getitem__ at train.py:9 (worker, pid 11)" in e
    assert "metrics-flusher" in e and "spawn" in f["hang"]["fix"]


def test_worker_crash_by_signal():
    exc = {"type": "RuntimeError", "message": "DataLoader worker (pid 77) is killed by signal: Segmentation fault.",
           "frames": []}
    dumps = [{"pid": 77, "role": "worker", "error": "Segmentation fault",
              "frames": [{"function": "decode", "file": "train.py", "line": 5}]}]
    st = stage("baseline", loader_event(nw=2) + steps(3, 0.01, 0.01), status="crash", exit={"how": "exception",
               "exc": exc}, fatal_dumps=dumps)
    r, f = findings(session([st]))
    assert r["verdict"] == "crash"
    assert r["crashes"][0]["signal"] == "SIGSEGV"
    assert "killed by SIGSEGV" in f["worker-crash"]["evidence"] and "decode at train.py:5" in f["worker-crash"]["evidence"]


def test_worker_oom_needs_memory_evidence():
    exc = {"type": "RuntimeError", "message": "DataLoader worker (pid 78) is killed by signal: Killed.", "frames": []}
    base = dict(status="crash", exit={"how": "exception", "exc": exc})
    _, f = findings(session([stage("baseline", loader_event(nw=2), oom_kills={}, **base)]))
    assert "worker-oom" not in f and "SIGKILL" in f["worker-crash"]["evidence"]
    assert "inconclusive" in f["worker-crash"]["evidence"] and "never sampled" in f["worker-crash"]["evidence"]
    _, f = findings(session([stage("baseline", loader_event(nw=2), oom_kills={"/proc/vmstat": 1}, **base)]))
    assert "oom_kill counter rose during the stage (/proc/vmstat by 1)" in f["worker-oom"]["evidence"]
    assert "worker-crash" not in f
    # a session written before the counters' sources were kept: a bare count
    _, f = findings(session([stage("baseline", loader_event(nw=2), oom_kills=2, **base)]))
    assert "oom_kill counter by 2" in f["worker-oom"]["evidence"]


def _worker_uss(mbs, pid=78):
    rows = [{"t": 1.0 * k, "pid": pid, "role": "worker", "cpu": 50.0, "uss": int(mb * 2**20)} for k, mb in enumerate(mbs)]
    return {"rows": rows, "system": []}


@pytest.mark.parametrize("mbs,oom", [([40, 200, 700], True),     # grew 660 MB, 17x: killed for memory
                                     ([40, 250], False),          # grew 210 MB: under the 256 MB bar
                                     ([600, 900], False),         # grew 300 MB but only 1.5x its start
                                     ([40], False)])              # a single reading shows no growth
def test_worker_oom_from_memory_growth_in_the_samples(mbs, oom):
    exc = {"type": "RuntimeError", "message": "DataLoader worker (pid 78) is killed by signal: Killed.", "frames": []}
    st = stage("baseline", loader_event(nw=2), status="crash", exit={"how": "exception", "exc": exc},
               samples=_worker_uss(mbs))
    r, f = findings(session([st], cgroup_memory_limit_bytes=2**30))
    assert r["crashes"][0]["memory"]["readings"] == len(mbs)
    if oom:
        ev = f["worker-oom"]["evidence"]
        assert "grew from 40 MB to 700 MB between 0.0 s and 2.0 s of the stage (3 readings)" in ev
        assert "memory limit 1024.0 MB, cgroup" in ev and "SIGKILL leaves no stack" in ev
    else:
        assert "worker-oom" not in f
        assert f"from {mbs[0]} MB to {max(mbs)} MB in {len(mbs)} readings" in f["worker-crash"]["evidence"]


def test_worker_exception_keeps_type_and_message():
    msg = ("Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
           '  File "/x/torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n    data = f()\n'
           '  File "/home/u/train.py", line 12, in __getitem__\n    raise ValueError("bad row 7")\n'
           "ValueError: bad row 7\n")
    st = stage("baseline", loader_event(nw=2), status="crash", exit={"how": "exception", "exc": {
        "type": "ValueError", "message": msg, "frames": []}})
    r, f = findings(session([st]))
    c = r["crashes"][0]
    assert (c["exception_type"], c["message"], c["culprit"]["line"]) == ("ValueError", "bad row 7", 12)
    assert "raised ValueError: bad row 7" in f["worker-crash"]["evidence"]


def test_script_error():
    exc = {"type": "KeyError", "message": "'lr'", "frames": [{"function": "main", "file": "/home/u/train.py",
                                                              "line": 40}]}
    st = stage("baseline", loader_event() + steps(10, 0.01, 0.01), status="crash",
               exit={"how": "exception", "exc": exc})
    _, f = findings(session([st]))
    assert "raised KeyError: 'lr'" in f["script-error"]["evidence"] and "main at /home/u/train.py:40" in \
        f["script-error"]["evidence"]


def _sweep_session(rates, current, choice, confirm_speedup=None, settings=None, repeats=5):
    st = [stage("baseline", loader_event(nw=current) + steps(40, 0.09, 0.01))]
    for n, rate in rates:
        # a drain stage whose steady rate is `rate` samples/s (8 samples per batch)
        st.append(stage("loader-only" if n == current else f"workers-{n}",
                        loader_event(nw=n) + steps(40, 8 / rate, 0.0)))
    notes = {"workers_sweep": {"choice": choice, "current": current, "effective_cpus": 2, "cap": 8,
                               "why_stopped": "reached the cap"}}
    if settings is not None:
        notes["confirm_settings"] = settings
        if confirm_speedup is not None:
            # interleaved pairs (the first A is the baseline), each run a little off (run-to-run drift)
            pairs = [{"a": "baseline", "b": "confirm"}] + [{"a": f"confirm-a{i}", "b": f"confirm-b{i}"}
                                                         for i in range(1, repeats)]
            notes["confirm"] = {"settings": settings, "wanted": repeats, "pairs": pairs}
            for i, p in enumerate(pairs):
                drift = 1 + 0.02 * ((i % 3) - 1)
                if p["a"] != "baseline":
                    st.append(stage(p["a"], loader_event(nw=current) + steps(40, 0.09 * drift, 0.01)))
                sp = confirm_speedup * (1 + 0.01 * (i % 2))
                st.append(stage(p["b"], loader_event(nw=settings["num_workers"]) +
                                steps(40, (0.09 / sp - 0.01 * (1 - 1 / sp)) * drift, 0.01)))
    return session(st, notes)


def test_too_few_workers_with_confirmed_speedup():
    s = _sweep_session([(0, 100), (1, 100), (2, 200), (4, 400), (8, 410)], current=0, choice=4,
                       confirm_speedup=3.0, settings={"num_workers": 4})
    r, f = findings(s)
    e = f["too-few-workers"]["evidence"]
    assert "0: 100.0" in e and "4: 400.0" in e and "the fewest within 5% of the best is 4" in e
    assert "Confirmed on the real training script" in e
    assert f["too-few-workers"]["fix"] == "Use DataLoader(..., num_workers=4) for the training DataLoader."
    assert r["recommendation"]["num_workers"] == 4 and r["recommendation"]["measured_speedup"] >= 2.5
    assert r["recommendation"]["status"] == "confirmed" and r["recommendation"]["repeats"] == 5
    lo, hi = r["recommendation"]["speedup_ci"]
    assert 1.02 < lo <= r["recommendation"]["measured_speedup"] <= hi


def test_one_pair_is_never_confirmed():
    """A single run each way has no interval: measured, not confirmed; the current settings stand."""
    s = _sweep_session([(0, 100), (4, 400)], current=0, choice=4, confirm_speedup=3.0,
                       settings={"num_workers": 4}, repeats=1)
    r, f = findings(s)
    rec = r["recommendation"]
    assert rec["status"] == "not-measured" and rec["num_workers"] == 0 and rec["speedup_ci"] is None
    assert f["too-few-workers"]["severity"] == "info" and "Not recommended" in f["too-few-workers"]["fix"]


def test_too_few_workers_not_recommended_when_confirm_is_not_faster():
    s = _sweep_session([(0, 100), (4, 400)], current=0, choice=4, confirm_speedup=1.0,
                       settings={"num_workers": 4})
    r, f = findings(s)
    assert f["too-few-workers"]["severity"] == "info" and "did not speed up" in f["too-few-workers"]["title"]
    assert r["recommendation"]["num_workers"] == 0  # unchanged: the confirm run decides
    # one story: the baseline waits on data 90% of the step, and its fix does not advise the
    # workers the recommendation rejected, nor running a probe that already ran
    fix = f["data-bound"]["fix"]
    assert "not faster beyond the noise" in fix and "current settings stand" in fix, fix
    assert "more workers" not in fix.lower() and "run the full probe" not in fix
    assert "the step itself" not in f["too-few-workers"]["fix"]  # a cause that was not measured


def test_data_bound_without_a_sweep_says_which_stages_measure_the_fix():
    r, f = findings(session([stage("baseline", loader_event(nw=0) + steps(40, 0.09, 0.01))]))
    assert f["data-bound"]["fix"].endswith("the probe's sweep and confirm stages measure which helps.")


def test_too_many_workers():
    r, f = findings(_sweep_session([(2, 400), (4, 405), (8, 398)], current=8, choice=2))
    assert "num_workers=2 is as fast as num_workers=8" in f["too-many-workers"]["title"]
    assert "8: 398.0" in f["too-many-workers"]["evidence"]


def _transforms_session(total, collate_s=0.01, fetch_s=None):
    names = ["Decode", "Blur", "Normalize"]
    ev = loader_event() + [{"e": "pipeline", "found": True, "kind": "Compose", "path": "dataset.transform.transforms",
                            "names": names}]
    for k in range(len(names) + 1):
        ev += [{"e": "prefix", "k": k, "phase": "start"}, {"e": "prefix", "k": k, "phase": "ok", "batches": 2}]
    fetch = fetch_s if fetch_s is not None else sum(total) + collate_s + 0.05
    ts = {"total": total, "calls": [100] * 3, "fetch_s": fetch, "collate_s": collate_s, "samples": 100,
          "batches": 10, "processes": 2}
    return session([stage("baseline", loader_event() + steps(40, 0.05, 0.05)),
                    stage("transforms", ev, tstats=ts)])


def test_slow_transform():
    r, f = findings(_transforms_session([0.1, 0.7, 0.05]))
    assert [t["name"] for t in r["transforms"]] == ["Decode", "Blur", "Normalize"]
    assert f["slow-transform"]["title"] == "Blur takes 78% of each sample's time"
    assert "7.00 ms per sample of 9.0 ms" in f["slow-transform"]["evidence"]


def test_no_slow_transform_when_costs_are_spread():
    _, f = findings(_transforms_session([0.3, 0.3, 0.3]))
    assert "slow-transform" not in f


def test_slow_collate():
    _, f = findings(_transforms_session([0.05, 0.05, 0.05], collate_s=0.5, fetch_s=0.7))
    assert "collate_fn took 50.00 ms per batch, 71% of the time" in f["slow-collate"]["evidence"]


def test_start_up_paid_every_epoch_is_epoch_restart():
    ev = loader_event(nw=2) + steps(8, 0.01, 0.01, iterators=5, startup=1.0)
    r, f = findings(session([stage("baseline", ev)]))
    assert "worker-startup" not in f  # the recurrence is epoch-restart's story (rules/startup.py)
    e = f["epoch-restart"]["evidence"]
    assert "each epoch after the first waited for its first batch (1.00 s, 1.00 s" in e
    assert "persistent_workers=False" in e
    assert "persistent_workers=True" in f["epoch-restart"]["fix"]


def test_epoch_restart_for_a_loader_rebuilt_each_epoch():
    ev = loader_event(nw=2, instances=5) + steps(8, 0.01, 0.01, iterators=5, startup=1.0)
    _, f = findings(session([stage("baseline", ev)]))
    assert "built again for every epoch" in f["epoch-restart"]["fix"]


@pytest.mark.parametrize("n_steps", [2, 4])
def test_few_steps_are_inconclusive(n_steps):
    r, f = findings(session([stage("baseline", loader_event() + steps(n_steps, 0.09, 0.01))]))
    assert r["verdict"] == "inconclusive" and f == {}


def _context_session(fork="ok", spawn="ok", forkserver="ok", spawn_extra=None, stderr="", static=None):
    st = [stage("baseline", loader_event(nw=2, method="fork") + steps(40, 0.05, 0.05))]
    runs = {}
    for method, status in (("fork", fork), ("spawn", spawn), ("forkserver", forkserver)):
        ev = loader_event(nw=2, method=method) + [
            {"e": "it", "l": 0, "t": 0, "workers": [5, 6], "threads": ["metrics-flusher"] if method == "fork" else [],
             "cuda_init": False, "native_pools": ["libgomp"] if method == "fork" else []}]
        if method == "spawn" and spawn_extra:
            ev.append(spawn_extra)
        st.append(stage(f"context-{method}", ev, status=status, detail=f"{status} detail",
                        stderr_tail=stderr if method != "fork" else ""))
        runs[method] = f"context-{method}"
    return session(st, {"start_methods": {"runs": runs}, "static": static or {"has_guard": True}})


def test_fork_unsafe_names_the_thread_and_the_library():
    _, f = findings(_context_session(fork="hang"))
    e = f["fork-unsafe"]["evidence"]
    assert "fork: hang" in e and "spawn: ok, forkserver: ok" in e
    assert "metrics-flusher" in e and "libgomp" in e
    assert 'multiprocessing_context="spawn"' in f["fork-unsafe"]["fix"]


def test_spawn_unsafe_names_the_unpicklable_attribute_path():
    pk = {"e": "pickle", "path": "dataset.transform.transforms[2]", "type": "function",
          "error": "AttributeError: Can't pickle local object 'main.<locals>.<lambda>'"}
    _, f = findings(_context_session(spawn="crash", forkserver="crash", spawn_extra=pk))
    assert f["spawn-unsafe"]["title"] == "dataset.transform.transforms[2] cannot be pickled for spawn workers"
    assert "Can't pickle local object" in f["spawn-unsafe"]["evidence"]


def test_spawn_unsafe_names_the_missing_main_guard():
    _, f = findings(_context_session(spawn="crash", stderr="RuntimeError: ... bootstrapping phase ...",
                                     static={"has_guard": False, "toplevel_calls": [14, 15]}))
    assert "No `if __name__" in f["spawn-unsafe"]["title"]
    assert "statements at lines 14, 15" in f["spawn-unsafe"]["evidence"]


def test_spawn_unsafe_names_a_class_only_in_main():
    err = "AttributeError: Can't get attribute 'CellDataset' on <module '__main__' (built-in)>"
    _, f = findings(_context_session(spawn="crash", stderr=err))
    assert "CellDataset exists only in __main__" in f["spawn-unsafe"]["title"]
    assert "Move CellDataset into a .py module" in f["spawn-unsafe"]["fix"]


def test_no_context_finding_when_every_method_works():
    _, f = findings(_context_session())
    assert "fork-unsafe" not in f and "spawn-unsafe" not in f


def _preflight_session(shm=None, files=65536, cuda=False, threads=None, nw=2, nbytes=8 * 2**20, tensors=3,
                       sharing="file_descriptor"):
    ev = loader_event(nw=nw, prefetch=2, method="fork")
    ev += [{"e": "it", "l": 0, "t": 0, "workers": [5, 6][:nw], "threads": [], "cuda_init": cuda,
            "sharing_strategy": sharing}]
    ev += [{"e": "b", "l": 0, "i": 0, "w": 0.1, "c": None, "n": 8, "s": 0.1, "bytes": nbytes, "tensors": tensors}]
    ev += steps(20, 0.01, 0.01)[2:]
    samples = None
    if threads:
        samples = {"rows": [{"t": 0.2, "pid": 5 + k, "role": "worker", "threads": threads, "cpu": 50.0}
                            for k in range(nw)], "system": []}
    return session([stage("baseline", ev, samples=samples)], shm_bytes_total=shm, open_files_limit=files)


def test_shm_small_shows_the_arithmetic():
    _, f = findings(_preflight_session(shm=40 * 2**20))
    e = f["shm-small"]["evidence"]
    assert "/dev/shm holds 40.0 MB; in flight: 2 workers x prefetch_factor 2 x 8.0 MB per batch" in e
    assert "(measured: the first batch)" in e
    assert "= 32.0 MB" in e
    _, f = findings(_preflight_session(shm=64 * 2**30))
    assert "shm-small" not in f


def test_fd_limit():
    _, f = findings(_preflight_session(files=256))
    assert "The open-file limit (256)" in f["fd-limit"]["title"]
    assert "keep 12 in flight, the 'file_descriptor' sharing strategy: one file descriptor each" \
        in f["fd-limit"]["evidence"]
    _, f = findings(_preflight_session(files=65536))
    assert "fd-limit" not in f
    # tensors shared as named files in /dev/shm take no descriptor each
    _, f = findings(_preflight_session(files=256, sharing="file_system"))
    assert "fd-limit" not in f


def test_cuda_before_fork():
    _, f = findings(_preflight_session(cuda=True))
    assert "torch.cuda.is_initialized() was True" in f["cuda-before-fork"]["evidence"]
    _, f = findings(_preflight_session(cuda=False))
    assert "cuda-before-fork" not in f


def test_thread_oversubscription():
    _, f = findings(_preflight_session(threads=9, nw=2))
    assert "10 thread-pool threads in the workers compete for 2 CPUs" == f["thread-oversubscription"]["title"]
    assert "18 threads at once" in f["thread-oversubscription"]["evidence"]
    assert "OMP_NUM_THREADS=1" in f["thread-oversubscription"]["fix"]
    for own in (1, 4):  # torch's own threads in a worker are not contention
        _, f = findings(_preflight_session(threads=own, nw=2))
        assert "thread-oversubscription" not in f


def test_slow_collate_is_silent_when_the_step_does_not_wait():
    s = _transforms_session([0.05, 0.05, 0.05], collate_s=0.5, fetch_s=0.7)
    s.stages[0] = stage("baseline", loader_event() + steps(40, 0.001, 0.1))  # compute-bound
    _, f = findings(s)
    assert "slow-collate" not in f and "slow-transform" not in f


def _notebook_session(base_status, base_detail, exc=None, stderr_tail=""):
    base = stage("baseline", loader_event(nw=2, method="spawn"), status=base_status, detail=base_detail,
                 exit={"how": "exception", "exc": exc} if exc else None, stderr_tail=stderr_tail,
                 returncode=1 if exc else None)
    script = stage("script-form", loader_event(nw=2, method="spawn") + steps(20, 0.01, 0.01))
    s = session([base, script], notes={"script_form": {"path": "/runs/nb-as-script.py"}})
    s.target = {"path": "train.ipynb", "kind": "notebook", "argv": []}
    return s


def test_notebook_only_names_the_class_the_workers_could_not_import():
    exc = {"type": "RuntimeError", "frames": [],
           "message": "DataLoader worker (pid 77) exited unexpectedly with exit code 1. Details are lost due to "
                      "multiprocessing."}
    tail = "AttributeError: Can't get attribute 'CellDataset' on <module '__main__' (built-in)>\n"
    r, f = findings(_notebook_session("crash", "RuntimeError: DataLoader worker (pid 77) exited unexpectedly", exc,
                                      tail))
    ev = f["notebook-only"]["evidence"]
    m = r["script_form"]["measured"]  # the script's run, measured as the baseline would be
    assert 0 < m["steps"] < 20 and m["samples_per_s"] == pytest.approx(8 / 0.02)
    assert "in a Jupyter kernel: crash" in ev
    assert f"as a script (/runs/nb-as-script.py): ok, {m['steps']} steps at {m['samples_per_s']} samples/s" in ev
    assert "could not import CellDataset" in ev and "Can't get attribute 'CellDataset'" in ev
    assert "Move CellDataset" in f["notebook-only"]["fix"]


def test_notebook_only_hang_without_a_missing_class_quotes_the_stage():
    _, f = findings(_notebook_session("hang", "no progress for 10.0 s"))
    assert "In the notebook: no progress for 10.0 s." in f["notebook-only"]["evidence"]
    assert ".py module" in f["notebook-only"]["fix"]


def test_no_notebook_only_when_the_script_fails_too():
    s = _notebook_session("hang", "no progress for 10.0 s")
    s.stages[1]["status"] = "hang"
    _, f = findings(s)
    assert "notebook-only" not in f
