"""Seconds from a stall to every process's stacks on disk, with 4 DataLoader workers.

The stall moment is when the parent received the last batch event; "on disk" is when
hang.json (all processes' stacks and the culprit) was written. Goal: timeout + 5 s or less.
Also printed: stall to the whole process tree ended and the stage returned (the issue's
bound: timeout + 15 s).

    python benchmarks/hang_latency.py [--timeout 5] [--rounds 3]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loaderdoctor.orchestrate.supervise import StageSpec, run_stage  # noqa: E402

WORKLOAD = os.path.join(HERE, "workloads", "stall_4_workers.py")


def one(method, timeout, run_dir):
    last = {"t": None}

    def on_event(ev):
        if ev.get("e") == "b":
            last["t"] = time.time()

    res = run_stage(StageSpec(f"stall-{method}", WORKLOAD, timeout=timeout, stack_method=method), run_dir,
                    on_event=on_event)
    ended = time.time()
    assert res.status == "hang", (res.status, res.detail)
    on_disk = os.path.getmtime(os.path.join(res.stack_dir, "hang.json"))
    procs = len(res.hang["processes"])
    return on_disk - last["t"], res.hang["capture_s"], procs, res.hang["culprit"], ended - last["t"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        for method in ("py-spy", "faulthandler"):
            lat, cap, end = [], [], []
            for _ in range(args.rounds):
                latency, capture, procs, culprit, to_end = one(method, args.timeout, run_dir)
                lat.append(latency)
                cap.append(capture)
                end.append(to_end)
            print(f"{method}: processes={procs} culprit={culprit['function']}:{culprit['line']} "
                  f"capture_s median={statistics.median(cap):.2f}")
            print(f"{method}: stall_to_stacks_s median={statistics.median(lat):.2f} max={max(lat):.2f} "
                  f"(timeout {args.timeout:g} s, goal <= {args.timeout + 5:g} s)")
            print(f"{method}: stall_to_tree_ended_s median={statistics.median(end):.2f} max={max(end):.2f} "
                  f"(bound {args.timeout + 15:g} s)")


if __name__ == "__main__":
    main()
