"""Wall time of a full `loaderdoctor probe` of a script whose workers deadlock at fork (a lock
held by a thread when the workers fork): the baseline waits out its first-batch allowance
(2 x --timeout), and every later experiment stuck in the same frame should be called a hang
within seconds. Goal: under timeout x 2 + 60 s.

    python benchmarks/hang_probe.py [--timeout 30]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "scenarios", "fork_logging_lock.py")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "loaderdoctor", "probe", SCRIPT, "--out", d, "-q",
                        "--timeout", str(args.timeout)], check=True, timeout=1800)
        wall = time.monotonic() - t
        r = json.load(open(os.path.join(d, "report.json")))
    for s in r["stages"]:
        print(f"stage {s['name']}: {s['status']} {s['seconds']:.1f} s {s['detail'][:80]}")
    print(f"verdict: {r['verdict']}; findings: {', '.join(f['id'] for f in r['findings'])}")
    print(f"goal_s={2 * args.timeout + 60:.0f}")
    print(f"hang_probe_s={wall:.1f}")


if __name__ == "__main__":
    main()
