"""The adaptive num_workers sweep against an exhaustive one, on an I/O-bound and a
CPU-bound dataset, measured in one run.

Exhaustive: every num_workers from 0 to the cap. Adaptive: loaderdoctor's climb (0, 1, 2,
4, 8, ... stopping after two steps that gain under 5%). For each dataset it prints the
throughput of the adaptive choice over the best exhaustive throughput (both read from the
exhaustive measurements, so the same configuration is compared with itself; goal >= 0.95)
and the adaptive sweep's time over the exhaustive sweep's (goal <= 0.5).

    python benchmarks/sweep.py [--cap 16]
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loaderdoctor import envinfo, metrics, stages, tuning  # noqa: E402
from loaderdoctor.orchestrate import ProbeOptions  # noqa: E402
from loaderdoctor.session import Session  # noqa: E402
from loaderdoctor.target import Target  # noqa: E402

SCRIPTS = os.path.join(os.path.dirname(HERE), "tests", "scripts")  # the same workloads the tests use
WORKLOADS = {"io_bound": os.path.join(SCRIPTS, "io_bound.py"),
             "cpu_bound": os.path.join(SCRIPTS, "cpu_bound_dataset.py")}


def context(path, run_dir, cap):
    opts = ProbeOptions(out=run_dir, steps=30, budget=10**6, max_workers=cap)
    session = Session(target={"path": path, "kind": "script", "argv": []}, options=opts.to_dict(),
                      environment=envinfo.collect())
    ctx = stages.Ctx(Target(path, "script"), opts, session, run_dir)
    base = ctx.run("baseline", steps=5)
    loaders = metrics.loaders_from_events(base.events)
    ctx.train_loader = loaders[0]
    ctx.train_site = loaders[0]["site"]
    return ctx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cap", type=int, default=16)
    args = ap.parse_args()
    eff = envinfo.effective_cpus()["cpu_count_effective"]
    print(f"effective CPUs {eff}; configurations num_workers 0..{args.cap}")
    for name, path in WORKLOADS.items():
        with tempfile.TemporaryDirectory() as d:
            ctx = context(path, d, args.cap)
            t = time.monotonic()
            lo = stages.loader_only(ctx)
            choice = stages.workers_sweep(ctx, lo)
            adaptive_s = time.monotonic() - t
            tried = ctx.session.notes["workers_sweep"]["tried"]
            t = time.monotonic()
            exhaustive = {}
            for n in range(args.cap + 1):
                ctx.run(f"exhaustive-{n}", mode="drain", target_site=ctx.train_site,
                        drain_seconds=stages.DRAIN_SECONDS, overrides={"num_workers": n},
                        override_site=ctx.train_site)
                exhaustive[n] = metrics.drain_rate(ctx.session.stages[-1])
            exhaustive_s = time.monotonic() - t
        best_n = max((n for n in exhaustive if exhaustive[n]), key=lambda n: exhaustive[n])
        exh_choice = tuning.choose(list(exhaustive.items()), eff)
        ratio = exhaustive[choice] / exhaustive[best_n]
        print(f"{name}: adaptive tried {tried} -> num_workers={choice} in {adaptive_s:.1f} s; exhaustive best "
              f"num_workers={best_n} ({exhaustive[best_n]:.0f} samples/s; its own 5% rule picks {exh_choice}) "
              f"in {exhaustive_s:.1f} s")
        print(f"{name}: rates " + " ".join(f"{n}:{r:.0f}" for n, r in exhaustive.items() if r))
        print(f"{name}: throughput_ratio={ratio:.3f} time_ratio={adaptive_s / exhaustive_s:.3f}")


if __name__ == "__main__":
    main()
