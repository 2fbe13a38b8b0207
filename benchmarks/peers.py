"""Peer tools on the same scenarios as loaderdoctor: what each one concluded, side by side.

Peers that install from the registry: gpuprof (`with gpuprof.profile(...)` around the run;
it patches nn.Module, backward and Optimizer.step) and TraceML (`traceml run`, with
`traceml.init()` and `with traceml.trace_step(model):` around each step of a plain loop). Both
need a code change; it is applied to a copy of each scenario here (PATCHES says exactly
what), never to the scenario itself. Neither stops a run on its own, so every peer run gets
the same bound: the run ends after LIMIT batches in all (a step budget like loaderdoctor's
--steps), and a run still going after --timeout seconds is killed, which is recorded as
such. loaderdoctor runs with the stages score.py --fast uses for the scenario.

Install the peers in their own environment (they pin their own dependencies):

    python -m venv .venv-peers
    .venv-peers/bin/pip install torch==2.13.0 gpuprof==0.7.1 traceml-ai==0.5.0
    python benchmarks/peers.py --peer-python .venv-peers/bin/python

Prints one block per scenario (expected, loaderdoctor, gpuprof, TraceML) and, last, how many
scenarios each tool got right: loaderdoctor by score.py's judgement (verdict and finding
ids); a peer by its own printed conclusion (gpuprof's insight lines, TraceML's
Verdict/Why/Next) naming the expected verdict (patterns in PEER_SAYS), or, for a healthy
control, raising no alarm above low severity. Error text the run itself printed (torch's
"worker killed by signal") is shown beside, never counted as the peer's conclusion.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import score  # noqa: E402

LIMIT = 60  # batches, over all loaders, before the run ends (peer runs only)

# scenario: (text of the training loop's `for` line, the model expression for trace_step).
# Scenarios without a model in the loop get an empty module: TraceML still times the step.
PATCHES = {
    "healthy_compute.py": ("for x, y in loader:", "model"),
    "slow_storage.py": ("for images, labels in loader:", "model"),
    "heavy_augment.py": ("for x, y in loader:", "net"),
    "slow_collate.py": ("for tokens in loader:", "emb"),
    "startup_per_epoch.py": ("for x, y in loader:", "model"),
    "hang_worker_queue.py": ("for batch in DataLoader(", "torch.nn.Module()"),
    "worker_segfault.py": ("for x in DataLoader(", "torch.nn.Module()"),
}

# What counts as a peer naming the expected cause, read from its printed words (lower case).
PEER_SAYS = {
    "data-bound": r"input[- ]bound|loader|input wait|data ?load",
    "compute-bound": r"compute[- ]bound|compute",
    "hang": r"hang|stall|deadlock|no progress",
    "crash": r"crash|segfault|sigsegv|exited unexpectedly|killed",
}

# A preamble both peers' copies get: the run ends (SystemExit) at the request for batch
# LIMIT + 1, over all loaders; both peers report on the way out.
BUDGET = f"""
import torch.utils.data.dataloader as _dl
_peer_next, _peer_seen = _dl._BaseDataLoaderIter.__next__, [0]
def _peer_budget(self):
    _peer_seen[0] += 1
    if _peer_seen[0] > {LIMIT}:
        raise SystemExit(0)
    return _peer_next(self)
_dl._BaseDataLoaderIter.__next__ = _peer_budget
"""


def wrap_loop(source: str, loop_text: str, model: str) -> str:
    """Put the body of the `for` line containing loop_text under `with traceml.trace_step(model):`."""
    lines = source.splitlines()
    at = next(i for i, line in enumerate(lines) if loop_text in line and line.lstrip().startswith("for "))
    indent = len(lines[at]) - len(lines[at].lstrip())
    end = at + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    body = ["    " + line if line.strip() else line for line in lines[at + 1:end]]
    head = " " * (indent + 4) + f"with traceml.trace_step({model}):"
    return "\n".join(lines[:at + 1] + [head] + body + lines[end:]) + "\n"


def traceml_copy(src: str, dst_dir: str, name: str) -> str:
    loop_text, model = PATCHES[name]
    with open(src) as f:
        source = f.read()
    body = wrap_loop(source, loop_text, model)
    out = os.path.join(dst_dir, name)
    with open(out, "w") as f:
        f.write("import torch\nimport traceml_ai as traceml\n" + BUDGET + "traceml.init(mode=\"auto\")\n" + body)
    return out


def gpuprof_copy(src: str, dst_dir: str, name: str) -> str:
    out = os.path.join(dst_dir, "run_" + name)
    with open(out, "w") as f:
        f.write("import runpy\nimport gpuprof\n" + BUDGET +
                f"with gpuprof.profile({name!r}):\n    runpy.run_path({src!r}, run_name='__main__')\n")
    return out


def run_peer(cmd: list[str], cwd: str, timeout: float) -> dict:
    """Run a peer in its own session, output to a file; past the timeout, end it and every
    process it started (TraceML starts helpers in sessions of their own)."""
    t = time.monotonic()
    log = os.path.join(cwd, "peer-output.txt")
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        p.wait(timeout=timeout)
        status = "finished" if p.returncode == 0 else f"exit {p.returncode}"
    except subprocess.TimeoutExpired:
        status = f"killed after {timeout:g} s"
    _end_tree(p)
    with open(log, errors="replace") as f:
        return {"status": status, "output": f.read(), "seconds": round(time.monotonic() - t, 1)}


def _end_tree(p: subprocess.Popen) -> None:
    try:
        tree = psutil.Process(p.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    for proc in tree:
        try:
            proc.kill()
        except psutil.Error:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.wait(timeout=30)
    psutil.wait_procs(tree, timeout=30)


def conclusion(output: str, tool: str) -> list[str]:
    """The lines of a peer's output that are its own conclusion (what is judged)."""
    keep = []
    for line in output.splitlines():
        low = line.lower()
        if tool == "gpuprof" and ("[high]" in low or "[med" in low or "[low]" in low):
            keep.append(line.strip())
        elif tool == "traceml" and any(low.strip(" |+").startswith(k) for k in ("verdict:", "why:", "next:")):
            keep.append(line.strip(" |+"))
    return list(dict.fromkeys(keep))


def errors(output: str) -> list[str]:
    """Error lines the run printed (torch's own, mostly): shown beside, never judged."""
    keep = [line.strip()[:160] for line in output.splitlines()
            if re.search(r"error|exception|segmentation|killed by signal", line, re.I)]
    return list(dict.fromkeys(keep))[-3:]


def judged(exp: dict, lines: list[str]) -> bool:
    """Right when the peer's own conclusion names the expected verdict; for a control (a
    healthy run), when it raises no alarm above low severity."""
    text = "\n".join(lines).lower()
    if exp.get("control"):
        return bool(lines) and not re.search(r"\[high\]|\[med|critical|warning|input-bound", text)
    return any(re.search(PEER_SAYS[v], text) for v in exp["verdict"] if v in PEER_SAYS)


def show(tool: str, run: dict, lines: list[str]) -> str:
    body = lines or ["(no conclusion printed)"]
    errs = errors(run["output"])
    out = f"{tool} ({run['status']}, {run['seconds']} s): " + ("right" if run.get("right") else "wrong")
    out += "".join(f"\n  {line}" for line in body)
    out += "".join(f"\n  (printed by the run) {line}" for line in errs)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer-python", required=True, help="a Python with gpuprof and traceml-ai installed")
    ap.add_argument("--timeout", type=float, default=90)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    with open(os.path.join(score.SCEN, "expected.json")) as f:
        expected = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    only = [x for x in args.only.split(",") if x]
    names = [n for n in PATCHES if not only or n in only]
    peer_python = os.path.abspath(args.peer_python)
    traceml_bin = os.path.join(os.path.dirname(peer_python), "traceml")
    right = {"loaderdoctor": 0, "gpuprof": 0, "traceml": 0}
    for name in names:
        exp = expected[name]
        src = os.path.join(score.SCEN, name)
        ld = score.run(name, exp, fast=True)
        with tempfile.TemporaryDirectory() as d:
            g = run_peer([peer_python, gpuprof_copy(src, d, name)], d, args.timeout)
            t = run_peer([traceml_bin, "run", traceml_copy(src, d, name)], d, args.timeout)
            summary = os.path.join(d, "logs")
            extra = ""
            if os.path.isdir(summary):
                for root, _, files in os.walk(summary):
                    if "final_summary.txt" in files:
                        with open(os.path.join(root, "final_summary.txt")) as f:
                            extra = f.read()
            shutil.rmtree(d, ignore_errors=True)
        g_lines, t_lines = conclusion(g["output"], "gpuprof"), conclusion(t["output"] + "\n" + extra, "traceml")
        g["right"], t["right"] = judged(exp, g_lines), judged(exp, t_lines)
        right["loaderdoctor"] += ld["status"] == "right"
        right["gpuprof"] += g["right"]
        right["traceml"] += t["right"]
        want = "/".join(exp["verdict"]) + (" " + ",".join(exp.get("findings", [])) if exp.get("findings") else "")
        print(f"=== {name}   expected: {want}")
        print(f"loaderdoctor ({ld.get('seconds', 0):.1f} s): {ld['status']}\n  {ld.get('verdict')} "
              f"{','.join(ld.get('findings', []))}")
        print(show("gpuprof", g, g_lines))
        print(show("traceml", t, t_lines), flush=True)
    print("right: " + ", ".join(f"{k} {v}/{len(names)}" for k, v in right.items()))


if __name__ == "__main__":
    main()
