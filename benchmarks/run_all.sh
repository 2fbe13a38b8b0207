#!/usr/bin/env bash
# Every benchmark in sequence on an otherwise idle machine; figures go to stdout.
# (score.py takes 20-30 minutes on 2 cores and is run on its own: python benchmarks/score.py)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== overhead";        python benchmarks/overhead.py
echo "== hang_latency";    python benchmarks/hang_latency.py
echo "== time_to_verdict"; python benchmarks/time_to_verdict.py
echo "== hang_probe";      python benchmarks/hang_probe.py
echo "== sweep";           python benchmarks/sweep.py
echo "== report_size";     python benchmarks/report_size.py --minutes "${REPORT_MINUTES:-10}"
