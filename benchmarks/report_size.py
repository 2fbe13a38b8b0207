"""Size of the reports after a long probe (goal: report.html and report.json under 5 MB for
a 10-minute probe), and the sampler's own CPU cost over it (goal: under 2% of a core at
5 Hz). The probe is real: the baseline stage of a slow 4-worker loop runs for --minutes.

    python benchmarks/report_size.py [--minutes 10]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    args = ap.parse_args()
    budget = args.minutes * 60
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "loaderdoctor", "probe", os.path.join(HERE, "workloads", "slow_forever.py"),
                        "--out", d, "-q", "--steps", str(10**9), "--budget", str(budget), "--stages", "baseline"],
                       check=True, timeout=budget + 300)
        r = json.load(open(os.path.join(d, "report.json")))
        sizes = {n: os.path.getsize(os.path.join(d, n)) for n in ("report.json", "report.html", "report.md",
                                                                  "session.json")}
    s = r["stage_samples"]["baseline"]
    print(f"probe: {r['stages'][0]['seconds']:.0f} s baseline, {r['baseline']['steps']} steps")
    print(f"sampler: {s['samples']} samples at {s['interval_s']} s, late {s['late_samples']}, max lateness "
          f"{s['lateness_max_s']} s, kept {len(s['series'])} of {s['points_measured']} points")
    for n, b in sizes.items():
        print(f"size {n}: {b / 2**20:.2f} MB")
    print(f"sampler_cpu_pct_of_core={s['sampler_cpu_pct_of_core']:.2f}")
    print(f"report_html_mb={sizes['report.html'] / 2**20:.2f} report_json_mb={sizes['report.json'] / 2**20:.2f}")


if __name__ == "__main__":
    main()
