"""The staged probes after the baseline: each is one or more runner children, planned from
what earlier stages measured. Orchestration only: numbers are read with metrics/tuning,
interpreted later by diagnose."""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from loaderdoctor.analysis import samples, stats, stepstats, tables, transfer, tuning
from loaderdoctor.orchestrate import warmstart
from loaderdoctor.orchestrate.supervise import StageResult, StageSpec, run_stage
from loaderdoctor.orchestrate.target import Target
from loaderdoctor.session import Session

# Time bound of one loader-only measurement (the sweep's points, prefetch, pin-memory), after
# its first batch. The demo's drain rates read over the first 2.0 s of 2.5 s drains were within
# 5% of the 2.5 s rates (within 4% of 3.5 s ones at 2.5 s), while drains of the same setting in
# probes minutes apart differ by 20-30%; a sweep step must gain 10%.
DRAIN_SECONDS = 2.0
TRANSFORMS_SECONDS = 2.5  # the transforms stage's drain: its per-transform shares need the samples
RECHECK_BELOW = 1.5  # a beyond-cores choice winning by less than this is measured twice
# Measured steps of each confirm run after the baseline (at most --steps). Five pairs are the
# confirm's point: on the demo the interval of the pairs' ratios is set by the drift between
# runs, not by their length. One probe's five pairs re-read over 50/30/20 steps of the same
# runs: [1.05, 1.20] / [1.09, 1.24] / [1.03, 1.41]; four more probes re-read over 30/25 steps:
# widths 0.58/0.61, 0.35/0.47, 0.33/0.31, 0.24/0.24, each verdict unchanged. 25 steps a run
# take 15% less time than 30; 20 is where throughput figures start to count.
CONFIRM_STEPS = 25
DRAIN_STEPS = 200  # batches a sweep measurement aims for (the time bound usually ends it first)


class Interrupted(Exception):
    pass


@dataclass
class Ctx:
    target: Target
    opts: object  # probe.ProbeOptions
    session: Session
    run_dir: str
    t_start: float = field(default_factory=time.monotonic)
    on_stage: Callable | None = None
    on_event: Callable | None = None
    gpus: object = None
    train_site: str | None = None
    train_loader: dict = field(default_factory=dict)
    hang_culprit: dict | None = None  # the baseline's hang: an experiment stuck in the same frame is hung
    warm: object = None  # orchestrate/warmstart.WarmStart: the stages after the baseline start from it
    warm_tried: bool = False
    baseline_env: dict = field(default_factory=dict, repr=False)  # what the script set before torch (in memory only)

    def left(self) -> float:
        return self.opts.budget - (time.monotonic() - self.t_start)

    def run(self, name: str, **kw) -> StageResult | None:
        left = self.left()
        if left <= 5:
            self.skip(name, f"the --budget of {self.opts.budget:g} s was used up")
            return None
        if self.on_stage:
            self.on_stage(name, None)
        kw.setdefault("steps", self.opts.steps)
        kw.setdefault("warmup", self.opts.warmup)
        kw.setdefault("max_seconds", left)
        kw.setdefault("kind", "notebook" if self.target.kind == "notebook" else "script")
        kw.setdefault("target", self.target.path)
        kw.setdefault("first_batch_timeout", self.opts.first_batch_timeout)
        kw.setdefault("hang_culprit", self.hang_culprit)
        kw.setdefault("nproc_per_node", getattr(self.opts, "nproc_per_node", None))  # every stage runs all ranks
        spec = StageSpec(name=name, argv=self.target.argv, recorded_argv=self.target.recorded_argv, timeout=self.opts.timeout,
                         stack_method=self.opts.stack_method, **kw)
        res = run_stage(spec, self.run_dir, on_event=self.on_event, gpus=self.gpus,
                        warm=self.warm_start() if name != "baseline" else None)
        if self._warm_suspect(res):
            res = self._rerun_cold(spec, res)
        if name == "baseline":
            self.baseline_env = res.private_env
        self.session.stages.append(res.to_dict())
        if self.on_stage:
            self.on_stage(name, res)
        if res.status == "interrupted":
            raise Interrupted(name)
        return res

    def warm_start(self):
        """The warm process, opened at the first stage after the baseline (a probe that ends
        with its baseline never pays for one)."""
        if not self.warm_tried:
            self.warm_tried = True
            self.warm = warmstart.open_for(self.session, self.target.kind, self.opts, self.run_dir, self.baseline_env,
                                           meanwhile=_import_for_the_report)
        return self.warm

    def _warm_suspect(self, res: StageResult) -> bool:
        """A stage forked warm that hung or crashed where the baseline (always a fresh
        interpreter) ran fine: the fork from the warm process may be what broke it. The
        start-method experiments are left out: a different start method is their question."""
        base = self.session.stage("baseline") or {}
        return (res.warm and res.status in ("hang", "crash") and base.get("status") == "ok"
                and not res.name.startswith("context-") and self.left() > 5)

    def _rerun_cold(self, spec: StageSpec, warm_res: StageResult) -> StageResult:
        """Run the stage again as a fresh interpreter; its result is the one that counts. The warm
        attempt's files stay beside it (stages/<name>-warm); the warm process is closed, so the
        stages after this one start cold too (notes.warm_start.cold_rerun says all of it)."""
        stage_dir = os.path.join(self.run_dir, "stages", spec.name)
        kept = stage_dir + "-warm"
        try:
            os.replace(stage_dir, kept)
        except OSError:
            kept = None
        note = {"stage": spec.name, "warm_status": warm_res.status, "warm_detail": warm_res.detail,
                "warm_seconds": warm_res.seconds, "warm_files": kept}
        self.session.notes.setdefault("warm_start", {})["cold_rerun"] = note
        self.close()
        res = run_stage(replace(spec, max_seconds=self.left()), self.run_dir, on_event=self.on_event, gpus=self.gpus)
        note["cold_status"] = res.status
        said = f"re-run cold: forked from the warm process it {'hung' if warm_res.status == 'hang' else 'crashed'}"
        res.detail = f"{res.detail}; {said} ({warm_res.detail})" if res.detail else said
        return res

    def close(self) -> None:
        if self.warm is not None:
            if self.warm.failed:  # it failed on the way: the stages after that started cold (each says so)
                self.session.notes.setdefault("warm_start", {})["failed_later"] = self.warm.failed
            self.warm.close()
            self.warm = None

    def skip(self, name: str, reason: str) -> None:
        self.session.skipped.append({"name": name, "reason": reason})


def loader_only(ctx: Ctx) -> StageResult | None:
    return ctx.run("loader-only", mode="drain", target_site=ctx.train_site, drain_seconds=DRAIN_SECONDS,
                   steps=max(ctx.opts.steps, DRAIN_STEPS))


def drain_workers(ctx: Ctx, name: str, n: int) -> float | None:
    res = ctx.run(name, mode="drain", target_site=ctx.train_site, drain_seconds=DRAIN_SECONDS,
                  steps=max(ctx.opts.steps, DRAIN_STEPS), overrides={"num_workers": n}, override_site=ctx.train_site)
    return None if res is None else stepstats.drain_rate(ctx.session.stages[-1])


def stage_load(ctx: Ctx, name: str) -> dict | None:
    """The CPUs' load while the named stage's batches flowed (see samples.window_load)."""
    st = ctx.session.stage(name)
    if not st:
        return None
    eff = int(ctx.session.environment.get("cpu_count_effective") or 1)
    return samples.window_load(st.get("samples"), st.get("window"), eff)


def workers_sweep(ctx: Ctx, loader_only_res: StageResult | None, ladder: list[int] | None = None) -> int | None:
    """Adaptive sweep over num_workers (or only the counts in `ladder`: a compute-bound
    baseline gets a short fewer-workers check); returns the chosen count (None if nothing
    measured)."""
    eff = int(ctx.session.environment.get("cpu_count_effective") or 1)
    cap = tuning.sweep_cap(eff, ctx.opts.max_workers)
    current = ctx.train_loader.get("num_workers")
    rates: list[tuple[int, float | None]] = []
    tried: list[int] = []
    loads: dict[int, dict] = {}
    why = "reached the cap"
    steps = ladder if ladder is not None else tuning.ladder(cap)
    for i, n in enumerate(steps):
        if n == current and loader_only_res is not None:
            rates.append((n, stepstats.drain_rate(ctx.session.stage("loader-only"))))  # measured as loader-only
            load = stage_load(ctx, "loader-only")
        else:
            if ctx.left() <= 5:
                ctx.skip(f"workers-{n}", f"the --budget of {ctx.opts.budget:g} s was used up")
                why = "the budget ran out"
                break
            rates.append((n, drain_workers(ctx, f"workers-{n}", n)))
            load = stage_load(ctx, f"workers-{n}")
        tried.append(n)
        if load:
            loads[n] = load
        if tuning.should_stop(rates):
            failed = [m for m, r in rates[-2:] if r is None]
            why = (f"two configurations in a row were not measured ({', '.join(map(str, failed))} workers failed)"
                   if len(failed) == 2 else "two steps in a row gained under 5%")
            break
        at = tuning.best_within(rates, eff)
        limited = tuning.cpu_limited(loads.get(at)) if at is not None else None
        if limited and i + 1 < len(steps) and steps[i + 1] > eff:
            why = (f"at {at} workers {limited}: more workers than CPUs would only take CPU time "
                   f"from the training step")
            break
    measured = [r for _, r in rates if r]
    rising = (why == "reached the cap" and len(measured) >= 2 and measured[-1] >= measured[-2] * (1 + tuning.GAIN))
    if rising:
        why = (f"it reached its cap ({cap}) while throughput was still rising ({measured[-2]:.1f} -> "
               f"{measured[-1]:.1f} samples/s): more workers may help further (--max-workers {2 * cap}), or "
               "threads for I/O-bound reads")
    ctx.session.notes["workers_sweep"] = {
        "still_rising": rising,
        "cap": cap, "effective_cpus": eff, "tried": tried, "rates": rates, "current": current,
        "not_tried": [n for n in steps if n not in tried], "why_stopped": why,
        "load": {str(n): load for n, load in loads.items()},
    }
    limited = {n for n, load in loads.items() if tuning.cpu_limited(load)}
    choice = tuning.choose(rates, eff, limited)
    within = tuning.choose([(n, r) for n, r in rates if n <= eff], eff)
    r = dict(rates)
    if choice is not None and within is not None and choice > eff and r[choice] < RECHECK_BELOW * r[within]:
        # More workers than CPUs wins: measure both contenders once more before believing it
        # (one short measurement on a busy machine can be off by 20%).
        again = {n: drain_workers(ctx, f"workers-{n}-again", n) for n in (within, choice)}
        first = dict(rates)
        averaged = [(n, (r + again[n]) / 2 if again.get(n) and r else r) for n, r in rates]
        choice = tuning.choose(averaged, eff, limited)
        ctx.session.notes["workers_sweep"]["recheck"] = {
            str(n): {"first": first[n], "again": again[n]} for n in again}
        ctx.session.notes["workers_sweep"]["rates"] = averaged
    ctx.session.notes["workers_sweep"]["choice"] = choice
    return choice


UNEVEN_STEPS = 1.5  # step time p90 over median: a deeper queue absorbs uneven steps (try 8 too)


def try_prefetch(ctx: Ctx, n: int | None, uneven: bool = False) -> None:
    """At the chosen worker count, a deeper prefetch queue: prefetch_factor 4, and 8 when the
    baseline's step times are uneven (a deeper queue carries the loader over slow steps; the
    plan calls this only then, orchestrate/probe.py). The
    smallest depth that gains at least tuning.GAIN over the default is kept; the confirm then
    measures it on the real script like any other candidate."""
    rate = dict((ctx.session.notes.get("workers_sweep") or {}).get("rates") or []).get(n)
    current = ctx.train_loader.get("prefetch_factor") or 2
    tried = {}
    for value in (4, 8) if uneven else (4,):
        if not n or not rate or current >= value or ctx.left() <= 5:
            break
        res = ctx.run(f"prefetch-{value}", mode="drain", target_site=ctx.train_site, drain_seconds=DRAIN_SECONDS,
                      steps=max(ctx.opts.steps, DRAIN_STEPS), overrides={"num_workers": n, "prefetch_factor": value},
                      override_site=ctx.train_site)
        tried[value] = stepstats.drain_rate(ctx.session.stages[-1]) if res is not None else None
    if not tried:
        return
    gains = [v for v, r in tried.items() if r and r >= rate * (1 + tuning.GAIN)]
    value = min(gains) if gains else max(tried)
    ctx.session.notes["prefetch"] = {"num_workers": n, "value": value, "rate": tried[value], "default_rate": rate,
                                     "tried": {str(k): v for k, v in tried.items()}, "uneven_steps": uneven,
                                     "keep": bool(gains)}


def pin_memory(ctx: Ctx, choice: int | None, h2d: dict) -> None:
    """The training loader drained with pin_memory=True at the chosen worker count, each batch
    copied to the baseline's device with non_blocking=True (as a pinned batch is best moved):
    its copies against the baseline's pageable ones, and its rate against the same loader
    unpinned (the pin-memory thread's own cost)."""
    current = ctx.train_loader.get("num_workers") or 0
    n = current if choice is None else choice
    sweep = dict((ctx.session.notes.get("workers_sweep") or {}).get("rates") or [])
    rate = sweep.get(n) if n in sweep else (stepstats.drain_rate(ctx.session.stage("loader-only") or {})
                                            if n == current else None)
    overrides = {"pin_memory": True} if n == current else {"pin_memory": True, "num_workers": n}
    notes = ctx.session.notes["pin_memory"] = {"num_workers": n, "current": current, "device": h2d.get("device"),
                                               "rate_unpinned": rate, "keep": False}
    res = ctx.run("pin-memory", mode="drain", target_site=ctx.train_site, drain_seconds=DRAIN_SECONDS,
                  steps=max(ctx.opts.steps, DRAIN_STEPS), overrides=overrides, override_site=ctx.train_site,
                  copy_to=h2d.get("device"))
    if res is None or res.status != "ok":
        return
    st = ctx.session.stages[-1]
    pinned = tables.stage_block(st, int(ctx.opts.warmup))["summary"].get("h2d")
    notes["comparison"] = transfer.pinned_comparison(h2d, pinned, rate, stepstats.drain_rate(st))
    notes["keep"] = transfer.pin_helps(notes["comparison"])


def transforms(ctx: Ctx) -> StageResult | None:
    overrides = {"persistent_workers": False} if ctx.train_loader.get("persistent_workers") else {}
    res = ctx.run("transforms", mode="transforms", target_site=ctx.train_site, drain_seconds=TRANSFORMS_SECONDS,
                  overrides=overrides, override_site=ctx.train_site if overrides else None)
    if res is not None:
        ctx.session.stages[-1]["tstats"] = read_tstats(os.path.join(ctx.run_dir, "stages", "transforms"))
    return res


def read_tstats(stage_dir: str) -> dict | None:
    """Sum the per-process transform timings the workers (or main) wrote."""
    agg = None
    for path in glob.glob(os.path.join(stage_dir, "tstats-*.json")):
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        if agg is None:
            agg = {"total": [0.0] * len(d["total"]), "calls": [0] * len(d["calls"]), "fetch_s": 0.0,
                   "collate_s": 0.0, "samples": 0, "batches": 0, "processes": 0}
        for k in range(min(len(agg["total"]), len(d["total"]))):
            agg["total"][k] += d["total"][k]
            agg["calls"][k] += d["calls"][k]
        for key in ("fetch_s", "collate_s", "samples", "batches"):
            agg[key] += d[key]
        agg["processes"] += 1
        agg.setdefault("read_frames", []).append(d.get("read_frames"))  # per process (child/readsampler.py)
    return agg


def confirm(ctx: Ctx, settings: dict) -> None:
    """The real training script with the recommended settings (B) against the script as
    written (A), in interleaved pairs whose order is shuffled (A B, B A, ...) so a drift of the
    machine favours neither arm. The first pair's A is the baseline; each later pair is two
    fresh runs of CONFIRM_STEPS measured steps. As many pairs as --repeats asks and the budget
    allows (said when cut)."""
    wanted = max(1, int(getattr(ctx.opts, "repeats", 5)))
    base = ctx.session.stage("baseline") or {}
    run_s = max(1.0, float(base.get("seconds") or 1.0))
    fit = 1 + stats.pairs_in_budget(ctx.left() - run_s, run_s, maximum=wanted - 1)
    pairs = [{"a": "baseline", "b": "confirm"}]
    notes = {"settings": settings, "wanted": wanted, "pairs": pairs,
             "cut_by_budget": fit < wanted}
    ctx.session.notes["confirm"] = notes
    steps = notes["steps"] = min(ctx.opts.steps, CONFIRM_STEPS)
    if ctx.run("confirm", overrides=settings, override_site=ctx.train_site, steps=steps) is None:
        return
    for i, order in enumerate(stats.plan_pairs(min(fit, wanted) - 1, seed=7), start=1):
        pair = {}
        for arm in order:
            name = f"confirm-{arm.lower()}{i}"
            kw = {"overrides": settings, "override_site": ctx.train_site} if arm == "B" else {}
            kw["steps"] = steps
            if ctx.run(name, **kw) is None:
                notes["cut_by_budget"] = True
                return
            pair[arm.lower()] = name
        pairs.append(pair)


def _import_for_the_report():
    """While the warm process imports (no stage runs: a core is idle here), import what
    writing the report needs (matplotlib, pandas: ~0.7 s) in a thread of this process, off
    the end of the probe; warmstart.open_for joins it before the next stage starts."""
    import threading

    def imports() -> None:
        try:
            import pandas  # noqa: F401

            from loaderdoctor.render import plots  # noqa: F401
        except Exception:  # the report imports them again, and says what failed
            pass

    thread = threading.Thread(target=imports, name="loaderdoctor-report-imports", daemon=True)
    thread.start()
    return thread


START_METHODS = ("fork", "spawn", "forkserver")
UNGUARDED_FIRST_BATCH = 20.0  # s: spawn start-up here is 3-6 s (re-importing torch)


def start_methods(ctx: Ctx, baseline: StageResult) -> None:
    """Drain the training loader under each start method (with at least 2 workers), the
    user's own included: the baseline cannot stand for it, since it may fail in the step."""
    nw = ctx.train_loader.get("num_workers") or 0
    default = ctx.session.environment.get("start_method_default") or "fork"
    current = (ctx.train_loader.get("start_method") or default) if nw > 0 else None
    runs = {}
    st = ctx.session.notes.get("static") or {}
    unguarded = st.get("has_guard") is False and bool(st.get("toplevel_calls"))
    for method in (m for m in START_METHODS if m in ctx.opts.start_methods):
        kw = {}
        if unguarded and method != "fork":
            # Its workers re-run the script's top level (static analysis): the outcome is decided
            # in their first seconds, so a first batch gets UNGUARDED_FIRST_BATCH, not the default.
            allowance = ctx.opts.first_batch_timeout or 2 * ctx.opts.timeout
            kw["first_batch_timeout"] = min(allowance, UNGUARDED_FIRST_BATCH)
        res = ctx.run(f"context-{method}", mode="drain", target_site=ctx.train_site, drain_seconds=3.0, steps=5,
                      overrides={"multiprocessing_context": method, "num_workers": max(nw, 2)},
                      override_site=ctx.train_site, **kw)
        if res is None:
            break
        runs[method] = f"context-{method}"
    ctx.session.notes["start_methods"] = {"runs": runs, "num_workers": max(nw, 2), "current": current}


def script_form(ctx: Ctx) -> StageResult | None:
    """A notebook's code cells as a plain script (definitions at module level, the rest
    under a main guard), run like the baseline: the side-by-side run."""
    from loaderdoctor.orchestrate import notebook

    path = os.path.join(ctx.run_dir, "notebook_as_script.py")
    with open(path, "w") as f:
        f.write(notebook.to_script(ctx.target.path))
    ctx.session.notes["script_form"] = {"path": path}
    return ctx.run("script-form", target=path, kind="script")
