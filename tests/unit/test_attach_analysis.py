"""analysis/attach.py from hand-built records: no process is started here."""

from __future__ import annotations

import io
import json
import os
import threading

import pytest

from loaderdoctor.analysis import attach as A
from loaderdoctor.observe.attach_sampler import (
    classify_pyspy_error,
    first_error_line,
    parse_speedscope,
    rate_for,
)
from loaderdoctor.orchestrate.attach import SamplerError, explain, ptrace_help
from loaderdoctor.render import get as get_renderer

STD = os.path.dirname(threading.__file__)           # this interpreter's stdlib: library code
DATA = "/venv/lib/python3.11/site-packages/torch/utils/data"
DIST = "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py"
USER = "/home/u/project/train.py"


def F(function, file, line, **locals_):
    f = {"function": function, "file": file, "line": line}
    if locals_:
        f["locals"] = {k: str(v) for k, v in locals_.items()}
    return f


FORKED = [F("BaseProcess._bootstrap", f"{STD}/multiprocessing/process.py", 314),
          F("Popen._launch", f"{STD}/multiprocessing/popen_fork.py", 71),
          F("DataLoader.__iter__", f"{DATA}/dataloader.py", 505), F("<module>", USER, 40)]


def main_wait(worker_id=None):
    nd = F("_MultiProcessingDataLoaderIter._next_data", f"{DATA}/dataloader.py", 1505,
           **({"worker_id": worker_id} if worker_id is not None else {}))
    return [F("_PollLikeSelector.select", f"{STD}/selectors.py", 415), F("Queue.get", f"{STD}/multiprocessing/queues.py", 113),
            F("_MultiProcessingDataLoaderIter._try_get_data", f"{DATA}/dataloader.py", 1291), nd,
            F("_BaseDataLoaderIter.__next__", f"{DATA}/dataloader.py", 725), F("<module>", USER, 40)]


def main_step(line=20):
    return [F("train_step", USER, line), F("<module>", USER, 42)]


def worker_busy(line=12, worker_id=None, idx=None):
    loc = {k: v for k, v in (("worker_id", worker_id), ("idx", idx)) if v is not None}
    return [F("Blocking.__getitem__", USER, line), F("_MapDatasetFetcher.fetch", f"{DATA}/_utils/fetch.py", 54),
            F("_worker_loop", f"{DATA}/_utils/worker.py", 374, **loc)] + FORKED


def worker_idle(worker_id=None, idx=None):
    loc = {k: v for k, v in (("worker_id", worker_id), ("idx", idx)) if v is not None}
    return [F("Queue.get", f"{STD}/multiprocessing/queues.py", 113),
            F("_worker_loop", f"{DATA}/_utils/worker.py", 350, **loc)] + FORKED


class Rec:
    """A raw attach record, built by hand."""

    def __init__(self, root=100, window=3.0):
        self.root, self.window = root, window
        self.frames, self.keys, self.threads, self.procs = [], {}, [], []
        self.start, self.end = {}, {}

    def _i(self, f):
        k = (f["function"], f["file"], f["line"])
        if k not in self.keys:
            self.keys[k] = len(self.frames)
            self.frames.append({"function": f["function"], "file": f["file"], "line": f["line"]})
        return self.keys[k]

    def proc(self, pid, ppid, cpu=0.0, ctx=0, cmdline=None, env=None, t0=0.0, gone=False):
        cmd = cmdline or ["/usr/bin/python3", "train.py", "--lr", "0.1", "--api-key", "s3cr3t"]
        first = {"pid": pid, "t": t0, "cpu_s": 1.0, "rss": 200 * 2**20, "ctx_voluntary": 10, "ppid": ppid,
                 "cmdline": cmd, "cwd": "/home/u/project", "env": env or {}, "uss": 50 * 2**20}
        last = None if gone else {**first, "t": self.window, "cpu_s": 1.0 + cpu, "ctx_voluntary": 10 + ctx}
        self.procs.append({"pid": pid, "first": first, "last": last})
        return self

    def thread(self, pid, samples, name="MainThread", tid=None):
        self.threads.append({"pid": pid, "tid": tid if tid is not None else pid, "name": name,
                             "samples": [[self._i(f) for f in s] for s in samples]})
        return self

    def dump(self, which, pid, frames, name="MainThread", tid=None):
        d = self.start if which == "start" else self.end
        d.setdefault(pid, []).append({"name": name, "tid": tid if tid is not None else pid, "frames": frames})
        return self

    def build(self):
        return {"pid": self.root, "window_s": self.window, "rate_hz": 20, "checked": {"python": {"version": "3.11.7"}},
                "processes": self.procs, "readings": [],
                "stacks": {"frames": self.frames, "threads": self.threads, "ancestry": {}},
                "dumps": {"start": [{"pid": p, "threads": t} for p, t in self.start.items()],
                          "end": [{"pid": p, "threads": t} for p, t in self.end.items()]},
                "sampler": {"pyspy_record_cpu_s": 0.2, "end_dump_s": 0.05, "errors": 0}}


def deadlock(with_locals=True):
    r = Rec().proc(100, 1).proc(101, 100).proc(102, 100)
    r.thread(100, [main_wait()] * 60)
    r.thread(101, [worker_busy(12)] * 60).thread(102, [worker_busy(12)] * 60)
    if with_locals:
        r.dump("start", 100, main_wait(worker_id=1)).dump("end", 100, main_wait(worker_id=1))
        for pid, wid, task in ((101, 0, 4), (102, 1, 5)):
            r.dump("start", pid, worker_busy(12, wid, task)).dump("end", pid, worker_busy(12, wid, task))
    return r.build()


# ---------------------------------------------------------------- frozen


def test_worker_deadlock_blames_the_worker_that_owes_the_batch():
    rep = A.build_report(deadlock())
    assert rep["verdict"] == "hang" and rep["mode"] == "attach"
    h = rep["hangs"][0]
    assert h["culprit"] == {"role": "worker", "pid": 102, "function": "Blocking.__getitem__", "file": USER,
                            "line": 12, "worker_id": 1}
    assert h["owing_worker"]["pid"] == 102 and h["owing_worker"]["task"] == 5
    assert h["processes"][0]["role"] == "main" and h["processes"][1]["pid"] == 102  # the owing worker first
    assert h["processes"][1]["frames"][-1]["function"] == "_worker_loop"  # the parent's frames at fork cut off
    assert h["waiting"]["kind"] == "batch" and h["method"] == "py-spy" and h["stage"] == "attach"
    assert [f["id"] for f in rep["findings"]] == ["hang"]  # no data-bound finding from a frozen loop
    assert "worker 1 (pid 102, task 5" in rep["findings"][0]["evidence"]
    assert rep["loaders"][0]["num_workers"] == 2 and rep["loaders"][0]["start_method"] == "fork"
    assert rep["loaders"][0]["dataset"] == "Blocking" and rep["loaders"][0]["site"] == f"{USER}:40"
    assert rep["stages"][0]["status"] == "hang"


def test_deadlock_without_locals_falls_back_to_stacks_and_cpu():
    rep = A.build_report(deadlock(with_locals=False))
    assert rep["verdict"] == "hang"
    ws = rep["attach"]["mains"][0]["workers"]
    assert not any(w["progressed"] for w in ws) and "same stack in every sample" in ws[0]["why"]
    assert rep["hangs"][0]["culprit"]["role"] == "worker"
    assert rep["hangs"][0]["owing_worker"]["how"].startswith("the first of the workers busy")


def test_main_blocked_in_its_own_function():
    r = Rec().proc(100, 1, cpu=0.01).proc(101, 100).proc(102, 100)
    r.thread(100, [main_step(22)] * 40)
    r.thread(101, [worker_idle()] * 40).thread(102, [worker_idle()] * 40)
    rep = A.build_report(r.build())
    h = rep["hangs"][0]
    assert rep["verdict"] == "hang" and h["culprit"]["role"] == "main" and h["culprit"]["line"] == 22
    assert h["waiting"]["kind"] == "call" and h["owing_worker"] is None
    assert "not in the data pipeline" in rep["findings"][0]["fix"]


@pytest.mark.parametrize("inner,kind", [
    (F("Queue.get", f"{STD}/queue.py", 171), "queue"),
    (F("Condition.wait", f"{STD}/threading.py", 320), "lock"),
    (F("all_reduce", DIST, 2500), "collective"),
])
def test_main_blocked_says_what_it_waits_on(inner, kind):
    r = Rec().proc(100, 1, cpu=0.0).proc(101, 100)
    r.thread(100, [[inner] + main_step(30)] * 30).thread(101, [worker_idle()] * 30)
    h = A.build_report(r.build())["hangs"][0]
    assert h["waiting"]["kind"] == kind and h["waiting"]["frame"]["function"] == inner["function"]
    assert h["culprit"]["line"] == 30


def test_a_collective_spinning_on_cpu_is_still_frozen_but_a_long_c_call_is_not():
    r = Rec().proc(100, 1, cpu=2.9).proc(101, 100)
    r.thread(100, [[F("all_reduce", DIST, 2500)] + main_step()] * 30).thread(101, [worker_idle()] * 30)
    assert A.build_report(r.build())["verdict"] == "hang"
    r = Rec().proc(100, 1, cpu=2.9).proc(101, 100)  # one long matmul: same stack, a core busy
    r.thread(100, [main_step()] * 30).thread(101, [worker_idle()] * 30)
    assert A.build_report(r.build())["verdict"] == "compute-bound"


# ---------------------------------------------------------------- slow, not frozen


def test_main_waits_every_sample_but_a_worker_advanced_is_slow_not_frozen():
    r = Rec().proc(100, 1).proc(101, 100).proc(102, 100)
    r.thread(100, [main_wait()] * 60)
    r.thread(101, [worker_busy(12)] * 60).thread(102, [worker_busy(12)] * 60)
    r.dump("start", 101, worker_busy(12, 0, 4)).dump("end", 101, worker_busy(12, 0, 6))
    r.dump("start", 102, worker_busy(12, 1, 5)).dump("end", 102, worker_busy(12, 1, 5))
    rep = A.build_report(r.build())
    assert rep["verdict"] == "data-bound" and not rep["hangs"]
    ws = {w["pid"]: w for w in rep["attach"]["mains"][0]["workers"]}
    assert ws[101]["progressed"] and "from 4 to 6" in ws[101]["why"] and not ws[102]["progressed"]


@pytest.mark.parametrize("cpu,ctx,progressed", [(0.6, 0, True), (0.0, 30, True), (0.0, 1, False)])
def test_worker_progress_signals_without_locals(cpu, ctx, progressed):
    r = Rec().proc(100, 1).proc(101, 100, cpu=cpu, ctx=ctx)
    r.thread(100, [main_wait()] * 30).thread(101, [worker_busy(12)] * 30)
    rep = A.build_report(r.build())
    assert rep["attach"]["mains"][0]["workers"][0]["progressed"] is progressed
    assert (rep["verdict"] == "hang") is (not progressed)


def test_new_or_exited_workers_count_as_progress():
    r = Rec().proc(100, 1).proc(101, 100, t0=1.2).proc(102, 100, gone=True)
    r.thread(100, [main_wait()] * 30).thread(101, [worker_busy(12)] * 30).thread(102, [worker_busy(12)] * 10)
    rep = A.build_report(r.build())
    assert rep["verdict"] == "data-bound"
    assert all(w["progressed"] for w in rep["attach"]["mains"][0]["workers"])


def test_data_bound_share_ci_and_busiest_worker_frames():
    r = Rec().proc(100, 1, cpu=0.3).proc(101, 100, cpu=1.5).proc(102, 100, cpu=1.5)
    r.thread(100, [main_wait()] * 80 + [main_step()] * 20)
    r.thread(101, [worker_busy(12)] * 70 + [worker_busy(14)] * 20 + [worker_idle()] * 10)
    r.thread(102, [worker_busy(12)] * 100)
    rep = A.build_report(r.build())
    b = rep["baseline"]
    assert rep["verdict"] == "data-bound" and b["data_wait_fraction"] == 0.8 and b["stack_samples"] == 100
    assert b["data_wait_ci"] == A.wilson(80, 100) and b["steps"] is None and b["unmeasured_reason"]
    top = rep["attach"]["mains"][0]["busiest_worker_frames"]
    assert (top[0]["line"], top[0]["samples"], top[0]["share"]) == (12, 170, 0.85) and top[1]["line"] == 14
    f = next(f for f in rep["findings"] if f["id"] == "data-bound")
    assert "80%" in f["evidence"] and "loaderdoctor probe /home/u/project/train.py --stages baseline," in f["fix"]
    assert rep["attach"]["mains"][0]["workers"][0]["cpu_pct"] == 50.0
    assert rep["recommendation"]["status"] == "not-measured" and rep["recommendation"]["num_workers"] == 2


@pytest.mark.parametrize("waits,verdict,finding", [(2, "compute-bound", "compute-bound"), (10, "balanced", None),
                                                   (30, "data-bound", "data-bound")])
def test_thresholds_are_the_probes(waits, verdict, finding):
    r = Rec().proc(100, 1, cpu=2.5).proc(101, 100, cpu=0.5)
    r.thread(100, [main_wait()] * waits + [main_step(20), main_step(21)] * ((100 - waits) // 2))
    r.thread(101, [worker_busy(12), worker_idle()] * 50)
    rep = A.build_report(r.build())
    assert rep["verdict"] == verdict
    assert [f["id"] for f in rep["findings"]] == ([finding] if finding else [])
    if verdict == "compute-bound":
        assert rep["attach"]["mains"][0]["busiest_loop_frames"][0]["function"] == "train_step"


def test_too_few_samples_is_inconclusive():
    r = Rec().proc(100, 1).proc(101, 100)
    r.thread(100, [main_wait()] * 5).thread(101, [worker_busy()] * 5)
    rep = A.build_report(r.build())
    assert rep["verdict"] == "inconclusive" and not rep["hangs"] and not rep["findings"]


def test_no_dataloader_leaves_no_main():
    r = Rec().proc(100, 1).thread(100, [main_step()] * 40)
    rep = A.build_report(r.build())
    assert rep["attach"]["mains"] == [] and rep["loaders"] == []


def test_launcher_pid_picks_the_ranks_among_its_descendants():
    launcher = ["/usr/bin/python3", "-m", "torch.distributed.run", "--nproc-per-node", "2", "train.py"]
    r = Rec(root=10).proc(10, 1, cmdline=launcher)
    r.thread(10, [[F("sleep_loop", "/venv/lib/python3.11/site-packages/torch/distributed/elastic/agent.py", 9)]] * 40)
    for rank, (pid, w) in enumerate(((100, 101), (200, 201))):
        env = {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
        r.proc(pid, 10, cpu=2.0, env=env, cmdline=["/usr/bin/python3", "-u", "train.py", "--token=abc"])
        r.proc(w, pid, cpu=0.5)
        r.thread(pid, [main_wait()] * (10 + 20 * rank) + [main_step()] * (30 - 20 * rank))
        r.thread(w, [worker_busy(), worker_idle()] * 20)
    rep = A.build_report(r.build())
    roles = {p["pid"]: p["role"] for p in rep["attach"]["processes"]}
    assert roles == {10: "other", 100: "main", 101: "worker", 200: "main", 201: "worker"}
    assert [l["rank"] for l in rep["loaders"]] == [0, 1]
    assert [x["rank"] for x in rep["ranks"]] == [0, 1] and rep["ranks"][1]["data_wait_fraction"] == 0.75
    assert rep["baseline"]["data_wait_fraction"] == 0.5  # pooled over the ranks
    assert rep["target"]["path"] == "/home/u/project/train.py" and rep["target"]["argv"] == ["--token=***"]
    assert "--nproc-per-node 2" in rep["attach"]["next_command"] and "abc" not in json.dumps(rep)


def test_only_one_rank_frozen():
    r = Rec(root=10).proc(10, 1)
    for rank, pid in enumerate((100, 200)):
        r.proc(pid, 10, cpu=2.0 if rank == 0 else 0.0, env={"RANK": str(rank)})
        r.proc(pid + 1, pid)
        r.thread(pid + 1, [worker_idle()] * 30)
    r.thread(100, [main_wait(), main_step()] * 15)
    r.thread(200, [[F("all_reduce", DIST, 2500)] + main_step(25)] * 30)
    rep = A.build_report(r.build())
    assert rep["verdict"] == "hang" and [h["rank"] for h in rep["hangs"]] == [1]
    assert "(rank 1)" in rep["findings"][0]["title"]


# ---------------------------------------------------------------- helpers


def test_wilson():
    assert A.wilson(0, 0) is None
    lo, hi = A.wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert A.wilson(60, 60)[1] == 1.0 and A.wilson(60, 60)[0] == pytest.approx(0.9398, abs=1e-3)
    assert A.wilson(0, 20)[0] == 0.0


def test_redact_and_script_of():
    assert A.redact(["--password", "x", "--lr", "1", "--api_key=y", "--auth-token", "z"]) == \
        ["--password", "***", "--lr", "1", "--api_key=***", "--auth-token", "***"]
    assert A.script_of(["/usr/bin/python3.11", "-u", "-W", "ignore", "t.py", "--a"], "/w") == \
        {"script": "/w/t.py", "module": None, "argv": ["--a"]}
    assert A.script_of(["python", "-m", "pkg.train", "--b"]) == {"script": None, "module": "pkg.train",
                                                                 "argv": ["--b"]}
    assert "python -m pkg.train" in A.next_command({"script": None, "module": "pkg.train", "argv": []}, "hang", None)
    assert A.next_command({"script": "/w/my train.py", "argv": ["--x", "a b"]}, "compute-bound", None) == \
        "loaderdoctor probe '/w/my train.py' --stages baseline -- --x 'a b'"


def test_parse_speedscope():
    doc = {"shared": {"frames": [
        {"name": 'process 10:"python -m torch.distributed.run train.py"', "file": "", "line": 0},
        {"name": 'process 100:"python train.py"', "file": "", "line": 0},
        {"name": "<module>", "file": USER, "line": 40},
        {"name": "_next_data", "file": f"{DATA}/dataloader.py", "line": 1505}]},
        "profiles": [{"name": 'Process 100 Thread 100 "MainThread"', "samples": [[0, 1, 2, 3], [0, 1, 2]]},
                     {"name": "Thread 0x7F00 \"pin\"", "samples": [[2]]}]}
    got = parse_speedscope(doc)
    assert got["frames"] == [{"function": "<module>", "file": USER, "line": 40},
                             {"function": "_next_data", "file": f"{DATA}/dataloader.py", "line": 1505}]
    t = got["threads"][0]
    assert (t["pid"], t["tid"], t["name"]) == (100, 100, "MainThread") and t["samples"] == [[1, 0], [0]]
    assert got["ancestry"] == {"100": [10, 100]} and got["threads"][1]["tid"] == 0x7F00


def test_rate_for_long_windows():
    assert rate_for(3) == 20 and rate_for(600) == 4 and rate_for(100000) == 1


def test_pyspy_messages_and_paragraphs():
    denied = "Permission Denied: Try running again with elevated permissions by going 'sudo env \"PATH=$PATH\" !!'"
    assert classify_pyspy_error(denied) == "no-ptrace"
    assert classify_pyspy_error("Error: Operation not permitted (os error 1)") == "no-ptrace"
    assert classify_pyspy_error("Error: Failed to find python version from target process\n\nStack backtrace:\n"
                                "   0: anyhow") == "not-python"
    assert classify_pyspy_error("Error: Failed to get process executable name. Check that the process is running."
                                ) == "not-running"
    assert first_error_line("Error: X\n\nStack backtrace:\n   0: y") == "Error: X"
    text = explain(SamplerError("no-ptrace", denied, 5, "python train.py"), 5)
    assert "ptrace is not permitted" in text and "--cap-add SYS_PTRACE" in text and "python train.py" in text
    assert "ptrace_scope is 1" in ptrace_help(1) and "until the machine reboots" in ptrace_help(3)
    assert "not a Python process" in explain(SamplerError("not-python", "x", 5, "sleep 60"), 5)
    assert "is not running" in explain(SamplerError("not-running", "gone", 5), 5)


def test_renderers_show_the_attach_report_and_escape_it():
    rec = deadlock()
    rec["processes"][0]["first"]["cmdline"] = ["python", "<script>alert(1)</script>.py"]
    rep = A.build_report(rec)
    md, html, js = io.StringIO(), io.StringIO(), io.StringIO()
    get_renderer("md")(rep, md)
    get_renderer("html")(rep, html)
    get_renderer("json")(rep, js)
    assert "## Attach: what the live job's stacks show" in md.getvalue() and f"{USER}:12" in md.getvalue()
    assert "How these numbers were measured" not in md.getvalue()
    h = html.getvalue()
    assert 'id="attach"' in h and "<script>alert" not in h and "&lt;script&gt;" in h
    assert "http://" not in h and "https://" not in h
    assert json.loads(js.getvalue())["mode"] == "attach"
