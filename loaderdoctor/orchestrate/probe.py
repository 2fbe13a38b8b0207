"""The probe: plan the stages, run each in its own runner child, record, diagnose, render.

    plan -> run stages (each: runner child + watchdog) -> Session -> build_report -> render
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from loaderdoctor.analysis import static, stepstats, tables, transfer, tuning
from loaderdoctor.analysis.rules.common import THRESHOLDS
from loaderdoctor.errors import EXIT_INTERRUPTED, EXIT_USAGE, LoaderDoctorError
from loaderdoctor.observe import envinfo
from loaderdoctor.observe.gpu import Gpus
from loaderdoctor.orchestrate import distwatch
from loaderdoctor.orchestrate import experiments as stages
from loaderdoctor.orchestrate.outputs import write_outputs
from loaderdoctor.orchestrate.supervise import StageResult, hold_interrupts
from loaderdoctor.orchestrate.target import Target
from loaderdoctor.protocol import DEFAULT_STEPS, DEFAULT_WARMUP
from loaderdoctor.session import Session

ALL_STAGES = ["baseline", "script-form", "loader-only", "workers", "transforms", "context", "confirm"]


@dataclass
class ProbeOptions:
    out: str = "loaderdoctor-report"
    timeout: float = 60.0
    first_batch_timeout: float | None = None
    budget: float = 600.0
    steps: int = DEFAULT_STEPS
    warmup: int = DEFAULT_WARMUP
    stages: list[str] = field(default_factory=lambda: list(ALL_STAGES))
    max_workers: int | None = None
    stack_method: str = "auto"
    repeats: int = 5  # interleaved A/B pairs of the confirm
    stages_given: bool = False  # --stages named them: run each one asked for, even where the plan would not
    nproc_per_node: int | None = None  # launch as torchrun would; every stage runs all ranks
    start_methods: list[str] = field(default_factory=lambda: list(stages.START_METHODS))  # the context stage's
    warm_start: bool = True  # the stages after the baseline fork from a process with torch imported (warmstart.py)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan(opts: ProbeOptions) -> list[str]:
    unknown = [s for s in opts.stages if s not in ALL_STAGES]
    if unknown:
        raise LoaderDoctorError(
            f"Unknown stage(s): {', '.join(unknown)}. Stages: {', '.join(ALL_STAGES)}.", EXIT_USAGE)
    if "baseline" not in opts.stages:
        raise LoaderDoctorError("The baseline stage is needed: every other stage is measured against it.", EXIT_USAGE)
    bad = [m for m in opts.start_methods if m not in stages.START_METHODS]
    if bad or not opts.start_methods:
        raise LoaderDoctorError(f"--start-methods takes fork, spawn and/or forkserver, not {', '.join(bad) or 'none'}.",
                                EXIT_USAGE)
    return [s for s in ALL_STAGES if s in opts.stages]


def never_iterated(res: StageResult) -> str | None:
    """Why the target is not probe-able, when it never started iterating a DataLoader."""
    if any(e.get("e") in ("it", "b", "it_error") for e in res.events):
        return None
    if res.status == "hang":
        if any(e.get("e") == "loader" for e in res.events):
            return None  # it built a loader and froze before its first batch: a hang to report
        c = (res.hang or {}).get("culprit")
        at = f" It was last in {c.get('function')} at {c.get('file')}:{c.get('line')}." if c else ""
        return (f"The script ran for {res.seconds:.0f} s without building a torch DataLoader (no progress for "
                f"{(res.hang or {}).get('idle_s', 0):.0f} s), so there was nothing to measure.{at} If it does build "
                "one later, raise --timeout / --first-batch-timeout; if it never does, it has no data pipeline "
                "for loaderdoctor to diagnose.")
    ex = res.exit or {}
    if ex.get("how") == "exception":
        exc = ex.get("exc") or {}
        where = next((f for f in exc.get("frames") or []), None)
        at = f" at {where['file']}:{where['line']}" if where else ""
        return (f"The script raised {exc.get('type')}: {(exc.get('message') or '').strip().splitlines()[0] if exc.get('message') else ''}"
                f"{at} before iterating any DataLoader, so there was nothing to measure. Fix that error (its "
                f"traceback is in {res.stderr_path}) and probe again.")
    if ex.get("how") == "sysexit":
        return (f"The script called sys.exit({ex.get('code')}) before iterating any DataLoader, so there was "
                "nothing to measure. Check the arguments it needs (pass them after `--`).")
    if ex.get("how") == "finished":
        return ("The script finished without iterating a torch DataLoader: there is no data pipeline to diagnose "
                "(full-batch training on in-memory tensors, for example, has no loader to wait on).")
    return f"The script ended before iterating any DataLoader ({res.detail})."


def _train_loader(res: StageResult) -> dict:
    by = stepstats.steps_by_loader(res.events)
    idx = stepstats.train_loader(by, res.events)
    loaders = {l["index"]: l for l in stepstats.loaders_from_events(res.events)}
    out = dict(loaders.get(idx, {}))
    out["iterators"] = by[idx].iterators if idx is not None else 0
    return out


def target_static(target: Target) -> dict:
    if target.kind == "notebook":
        return {}
    try:
        with open(target.path, encoding="utf-8", errors="replace") as f:
            return static.main_guard(f.read())
    except OSError:
        return {}


def _baseline_wait(session: Session) -> float | None:
    """The baseline's data-wait share, as the report will state it (None: not measured)."""
    st = session.stage("baseline")
    if not st or st["status"] != "ok":
        return None
    summary = tables.stage_block(st, int(session.options.get("warmup", DEFAULT_WARMUP)))["summary"]
    return summary["data_wait_fraction"] if (summary.get("steps") or 0) >= THRESHOLDS["min_steps"] else None


def _compute_bound(ctx: stages.Ctx) -> float | None:
    """The baseline's data wait when it is compute-bound and the plan may act on it: not when
    --stages named the stages (each one named runs, whatever the baseline measured)."""
    if ctx.opts.stages_given:
        return None
    wait = _baseline_wait(ctx.session)
    return wait if wait is not None and wait < THRESHOLDS["compute_bound_fraction"] else None


def _throughput(ctx: stages.Ctx, wanted: list[str], base: StageResult) -> int | None:
    """loader-only and the num_workers sweep, planned from the baseline: a compute-bound
    baseline gets only a short fewer-workers check (the data wait has nothing to give)."""
    if "loader-only" not in wanted and "workers" not in wanted:
        return None
    if base.status != "ok":
        ctx.skip("loader-only", f"the baseline ended in '{base.status}': a throughput measurement would too")
        if "workers" in wanted:
            ctx.skip("workers", f"the baseline ended in '{base.status}'")
        return None
    wait = _compute_bound(ctx)
    compute_bound = wait is not None
    nw = ctx.train_loader.get("num_workers") or 0
    ladder = None
    if compute_bound:
        fewer = [n for n in sorted({nw // 2, max(0, nw - 1)}) if n < nw
                 and tuning.keeps_semantics(ctx.train_loader, {"num_workers": n})]
        ctx.session.notes["plan"] = {"compute_bound": True, "data_wait": wait}
        if not fewer:
            for name in ("loader-only", "workers"):
                if name in wanted:
                    ctx.skip(name, f"the baseline is compute-bound (data wait {100 * wait:.1f}%): no faster loader "
                                   "can speed it up, and there are no workers to spare")
            return None
        ladder = fewer + [nw]
    lo = stages.loader_only(ctx) if "loader-only" in wanted else None
    if "workers" not in wanted:
        return None
    choice = stages.workers_sweep(ctx, lo, ladder=ladder)
    if not compute_bound:
        # a deeper queue absorbs uneven steps; the drain's own waits cannot say (n workers deliver
        # in rounds: a short wait and a long one alternate however even the fetches are)
        if _uneven(ctx, "baseline", "step_s"):
            stages.try_prefetch(ctx, choice, uneven=True)
        elif choice:
            ctx.skip("prefetch", f"the baseline's steps are even (p90 within {stages.UNEVEN_STEPS}x the median): "
                                 "a deeper prefetch queue has nothing to absorb")
    return choice


def _pin(ctx: stages.Ctx, choice: int | None) -> None:
    """On a GPU: the training loader with pinned memory, its batches copied as the script did,
    when the baseline's copies came from pageable memory at a measurable cost."""
    h2d = tables.stage_block(ctx.session.stage("baseline"), int(ctx.opts.warmup))["summary"].get("h2d")
    why = transfer.pin_skip_reason(h2d, ctx.train_loader)
    if why:
        if h2d:  # no copy to a GPU (a CPU run): nothing to say
            ctx.skip("pin-memory", why)
        return
    stages.pin_memory(ctx, choice, h2d)


def _uneven(ctx: stages.Ctx, stage: str, key: str) -> bool:
    """A stage's step (or wait) times: p90 over UNEVEN_STEPS times the median."""
    st = ctx.session.stage(stage)
    if not st or st["status"] != "ok":
        return False
    q = tables.stage_block(st, int(ctx.opts.warmup))["summary"].get(key) or {}
    return bool(q.get("median") and q.get("p90") and q["p90"] > stages.UNEVEN_STEPS * q["median"])


def _context_skipped(ctx: stages.Ctx, base: StageResult) -> str | None:
    """Why the start-method stages are not worth their runs (None: run them). They are run
    when the start method is at stake: a stage hung or crashed, the script has no main guard,
    the target is a notebook, the loader or the platform uses spawn/forkserver, or asked for."""
    if ctx.opts.stages_given or ctx.target.kind == "notebook" or ctx.opts.nproc_per_node:
        return None
    if base.status != "ok" or any(s["status"] != "ok" for s in ctx.session.stages):
        return None
    st = ctx.session.notes.get("static") or {}
    if st.get("has_guard") is False and st.get("toplevel_calls"):
        return None
    default = ctx.session.environment.get("start_method_default") or "fork"
    if default != "fork" or (ctx.train_loader.get("start_method") or default) != "fork":
        return None
    return ("every stage ran healthy under fork, the start method the script uses; spawn and forkserver are "
            "probed when a stage hangs or crashes, the script has no main guard, the target is a notebook or "
            "uses them, or on request (--stages ...,context)")


def _confirm(ctx: stages.Ctx, wanted: list[str], base: StageResult, choice: int | None) -> None:
    if "confirm" not in wanted:
        return
    session = ctx.session
    settings = tuning.recommended_settings(ctx.train_loader, choice, ctx.train_loader.get("iterators", 0),
                                           session.notes.get("prefetch"), session.notes.get("pin_memory"))
    session.notes["confirm_settings"] = settings
    if base.status != "ok":
        ctx.skip("confirm", f"the baseline ended in '{base.status}'")
    elif not settings:
        failed = [s["name"] for s in session.stages if s["name"] != "baseline"
                  and not s["name"].startswith("context-") and s["status"] != "ok"]
        ctx.skip("confirm", "nothing to confirm: no measured setting beat the current one"
                 + (f" (not measured: {', '.join(failed)} failed)" if failed else
                    "; the current loader settings are the best measured"))
    else:
        stages.confirm(ctx, settings)


def probe(target: Target, opts: ProbeOptions, *, on_stage: Callable[[str, StageResult | None], None] | None = None,
          on_event: Callable[[dict], None] | None = None) -> dict:
    """The baseline, then the experiments its result calls for: a compute-bound baseline skips
    the transform bisection and gets only a fewer-workers check; after a hang, an experiment
    stuck in the same frame is a hang at once."""
    wanted = plan(opts)
    gpus = Gpus()
    session = Session(target=target.to_dict(), options=opts.to_dict(), environment=envinfo.collect(gpus),
                      node=distwatch.node_info(target, opts.nproc_per_node))
    out_dir = opts.out
    os.makedirs(out_dir, exist_ok=True)
    ctx = stages.Ctx(target, opts, session, out_dir, on_stage=on_stage, on_event=on_event, gpus=gpus)
    session.notes["static"] = target_static(target)
    try:
        base = ctx.run("baseline")
        if base is None:
            raise LoaderDoctorError("The --budget is too small to run even the baseline.", EXIT_USAGE)
        why = never_iterated(base)
        if why:
            session.ended = time.time()
            written = write_outputs(session, out_dir, secrets=target.secrets)
            raise LoaderDoctorError(why, EXIT_USAGE, report_path=written["paths"].get("md"))
        if target.kind == "notebook" and "script-form" in wanted:
            stages.script_form(ctx)
        ctx.train_loader = _train_loader(base)
        ctx.train_site = ctx.train_loader.get("site")
        if base.hang and base.hang.get("culprit"):
            ctx.hang_culprit = base.hang["culprit"]
        choice = _throughput(ctx, wanted, base)
        if "loader-only" in wanted and base.status == "ok":
            _pin(ctx, choice)
        if "transforms" in wanted:
            wait = _compute_bound(ctx)
            if wait is not None:
                ctx.skip("transforms", f"the baseline is compute-bound (data wait {100 * wait:.1f}%): the "
                                       "pipeline's cost is hidden behind the step, nothing to bisect")
            else:
                stages.transforms(ctx)
        if "context" in wanted:
            why_not = _context_skipped(ctx, base)
            if why_not:
                ctx.skip("context", why_not)
            else:
                stages.start_methods(ctx, base)
        _confirm(ctx, wanted, base, choice)
    except (stages.Interrupted, KeyboardInterrupt):
        hold_interrupts()
        session.interrupted = True
        session.ended = time.time()
        written = write_outputs(session, out_dir, secrets=target.secrets)
        raise LoaderDoctorError(
            "Interrupted: loaderdoctor ended the script and its workers. A partial report of what was measured "
            f"is in {written['paths'].get('md')}.", EXIT_INTERRUPTED, report_path=written["paths"].get("md"))
    finally:
        ctx.close()
    for name in wanted:
        if not session.stage(name) and not any(s["name"] == name for s in session.skipped) \
                and name not in ("workers", "context", "script-form"):
            ctx.skip(name, "not run")
    session.ended = time.time()
    return write_outputs(session, out_dir, secrets=target.secrets)
