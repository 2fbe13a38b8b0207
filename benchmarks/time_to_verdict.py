"""Wall time of a full `loaderdoctor probe` of the bundled demo (goal: 45 s or less on 2 cores;
the confirm runs its default 5 interleaved pairs within that when the budget allows).

    python benchmarks/time_to_verdict.py              # one probe, default options
    python benchmarks/time_to_verdict.py --cold-too   # and one with --cold-starts right after it

--cold-too measures the warm start's saving side by side: the same probe with every stage a
fresh interpreter (as before warm starts), on the machine as it is in the same minutes.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def probe(*extra):
    with tempfile.TemporaryDirectory() as d:
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "loaderdoctor", "probe", "--out", d, "-q", *extra], check=True,
                       timeout=900, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - t
        r = json.load(open(os.path.join(d, "report.json")))
    return wall, r


def show(label, wall, r):
    for s in r["stages"]:
        print(f"{label} stage {s['name']}: {s['status']} {s['seconds']:.1f} s")
    rec = r.get("recommendation") or {}
    print(f"{label} verdict: {r['verdict']}; findings: {', '.join(f['id'] for f in r['findings'])}; "
          f"confirm interval {rec.get('speedup_ci')}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold-too", action="store_true", help="also run the probe with --cold-starts, right after")
    args = ap.parse_args()
    wall, r = probe()
    show("warm", wall, r)
    if args.cold_too:
        cold, rc = probe("--cold-starts")
        show("cold", cold, rc)
        print(f"time_to_verdict_cold_s={cold:.1f}")
        print(f"warm_over_cold={wall / cold:.3f}")
    print(f"time_to_verdict_s={wall:.1f}")


if __name__ == "__main__":
    main()
