"""Overhead of loaderdoctor's baseline hooks on a real training loop.

Runs one workload plain (`python script`), as loaderdoctor's baseline stage (hooks, event
stream, parent-side sampler and watchdog), the same without the sampler (hooks only), and
under torch.profiler, alternating the four, in one run; each run reports its own loop's
steps/s. Prints the medians and, last, `overhead_ratio=R` (instrumented steps/s
over plain; goal >= 0.98). R is the median over rounds of the paired ratio (each round's
instrumented run over the plain run just before it), with its quartiles: on a small shared
machine the rate of one configuration drifts by 10-20% between runs, and pairing neighbours
cancels only part of that drift. So it also prints `hooks_ab_ratio`: the hooks measured in
one process, chunks of steps alternately hooked and not (the workload's OVERHEAD_MODE=ab),
which resolves about 1%.

    python benchmarks/overhead.py [--rounds 5] [--steps 600]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loaderdoctor.orchestrate.supervise import StageSpec, run_stage  # noqa: E402

WORKLOAD = os.path.join(HERE, "workloads", "overhead_train.py")
RATE = re.compile(r"steps_per_s=([\d.]+)")
AB = re.compile(r"ab_ratio=([\d.]+)")


def plain(steps, env=None):
    out = subprocess.run([sys.executable, WORKLOAD, str(steps)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, **(env or {})}, check=True).stdout
    return float(RATE.search(out).group(1))


def hooked(steps, run_dir, sample_interval=0.2):
    # steps far above the workload's length: the script finishes by itself, fully measured
    res = run_stage(StageSpec("overhead", WORKLOAD, argv=[str(steps)], steps=10**9, timeout=120,
                              sample_interval=sample_interval), run_dir)
    if res.status != "ok":
        raise SystemExit(f"instrumented run failed: {res.status} {res.detail}\n{res.stderr_tail}")
    with open(res.stdout_path) as f:
        return float(RATE.search(f.read()).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    rates = {"plain": [], "loaderdoctor": [], "hooks_only": [], "torch_profiler": []}
    with tempfile.TemporaryDirectory() as run_dir:
        for r in range(args.rounds):
            rates["plain"].append(plain(args.steps))
            rates["loaderdoctor"].append(hooked(args.steps, run_dir))  # the baseline stage as probe runs it
            rates["hooks_only"].append(hooked(args.steps, run_dir, sample_interval=None))  # without the sampler
            rates["torch_profiler"].append(plain(args.steps, {"OVERHEAD_MODE": "torch_profiler"}))
            print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"workload: {args.steps} steps of batch 64, 128->512->512->10 MLP, num_workers=0; {args.rounds} rounds alternating")
    for k, v in med.items():
        print(f"median steps/s {k}: {v:.1f}")
    ratios = {k: [a / b for a, b in zip(rates[k], rates["plain"])]
              for k in ("loaderdoctor", "hooks_only", "torch_profiler")}
    paired = {k: statistics.median(v) for k, v in ratios.items()}
    q = statistics.quantiles(ratios["loaderdoctor"], n=4)
    print(f"overhead_ratio quartiles {q[0]:.4f} {q[1]:.4f} {q[2]:.4f}")
    ab = subprocess.run([sys.executable, WORKLOAD, str(args.steps)], capture_output=True, text=True,
                        timeout=900, check=True,
                        env={**os.environ, "OVERHEAD_MODE": "ab", "PYTHONPATH": os.path.dirname(HERE)}).stdout
    print(ab.strip().splitlines()[0])
    print(f"hooks_ab_ratio={AB.search(ab).group(1)}")
    best = {k: max(v) for k, v in rates.items()}
    print(f"best-of ratio loaderdoctor={best['loaderdoctor'] / best['plain']:.4f} "
          f"torch_profiler={best['torch_profiler'] / best['plain']:.4f}")
    print(f"hooks_only_ratio={paired['hooks_only']:.4f}")
    print(f"torch_profiler_ratio={paired['torch_profiler']:.4f}")
    print(f"overhead_ratio={paired['loaderdoctor']:.4f}")


if __name__ == "__main__":
    main()
