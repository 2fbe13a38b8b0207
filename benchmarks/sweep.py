"""The adaptive num_workers sweep against an exhaustive one, on an I/O-bound and a
CPU-bound dataset, measured in one run.

Exhaustive: every num_workers from 0 to the cap. Adaptive: loaderdoctor's climb (0, 1, 2,
4, 8, ... stopping after two steps that gain under 5%). For each dataset it prints the
throughput of the adaptive choice over the best exhaustive throughput (both read from the
exhaustive measurements, so the same configuration is compared with itself; goal >= 0.95),
and over the configuration the same rule picks from all the exhaustive measurements (a
CPU-bound loader's best raw rate past the cores is the workers taking CPU from the rest)
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

from loaderdoctor.analysis import stepstats as metrics  # noqa: E402
from loaderdoctor.analysis import tuning  # noqa: E402
from loaderdoctor.observe import envinfo  # noqa: E402
from loaderdoctor.orchestrate import experiments as stages  # noqa: E402
from loaderdoctor.orchestrate.probe import ProbeOptions  # noqa: E402
from loaderdoctor.session import Session  # noqa: E402
from loaderdoctor.orchestrate.target import Target  # noqa: E402

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


def _pct(load, key):
    return "-" if not load or load.get(key) is None else f"{100 * load[key]:.0f}%"


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
            exhaustive, loads = {}, {}
            for n in range(args.cap + 1):
                exhaustive[n] = stages.drain_workers(ctx, f"exhaustive-{n}", n)  # as the sweep measures
                load = stages.stage_load(ctx, f"exhaustive-{n}")
                if load:
                    loads[n] = load
            exhaustive_s = time.monotonic() - t
        best_n = max((n for n in exhaustive if exhaustive[n]), key=lambda n: exhaustive[n])
        limited = {n for n, load in loads.items() if tuning.cpu_limited(load)}
        exh_choice = tuning.choose(list(exhaustive.items()), eff, limited)
        ratio = exhaustive[choice] / exhaustive[best_n]
        ratio_rule = exhaustive[choice] / exhaustive[exh_choice]
        print(f"{name}: adaptive tried {tried} -> num_workers={choice} in {adaptive_s:.1f} s; exhaustive best "
              f"num_workers={best_n} ({exhaustive[best_n]:.0f} samples/s; the same rule on all of them picks "
              f"{exh_choice}) "
              f"in {exhaustive_s:.1f} s")
        cells = [f"{n}:{r:.0f}({_pct(loads.get(n), 'busy')}/{_pct(loads.get(n), 'worker_cpu_share')})"
                 for n, r in exhaustive.items() if r]
        print(f"{name}: rates (CPUs busy/each worker's CPU share) " + " ".join(cells))
        print(f"{name}: throughput_ratio={ratio:.3f} (vs the same rule over all: {ratio_rule:.3f}) "
              f"time_ratio={adaptive_s / exhaustive_s:.3f}")


if __name__ == "__main__":
    main()
