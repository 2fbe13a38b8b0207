"""Wall time of a full `loaderdoctor probe` of the bundled demo (goal: 45 s or less on 2 cores;
the confirm runs its default 5 interleaved pairs within that when the budget allows).

    python benchmarks/time_to_verdict.py
"""
import json
import os
import subprocess
import sys
import tempfile
import time


def main():
    with tempfile.TemporaryDirectory() as d:
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "loaderdoctor", "probe", "--out", d, "-q"], check=True, timeout=900)
        wall = time.monotonic() - t
        r = json.load(open(os.path.join(d, "report.json")))
    for s in r["stages"]:
        print(f"stage {s['name']}: {s['status']} {s['seconds']:.1f} s")
    print(f"verdict: {r['verdict']}; findings: {', '.join(f['id'] for f in r['findings'])}")
    print(f"time_to_verdict_s={wall:.1f}")


if __name__ == "__main__":
    main()
