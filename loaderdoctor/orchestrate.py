"""The probe: plan the stages, run each in its own runner child, record, diagnose, render.

    plan -> run stages (each: runner child + watchdog) -> Session -> build_report -> render
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from loaderdoctor import envinfo, metrics, stages, static, tuning
from loaderdoctor.errors import EXIT_INTERRUPTED, EXIT_USAGE, LoaderDoctorError
from loaderdoctor.gpu import Gpus
from loaderdoctor.render import get as get_renderer
from loaderdoctor.report import build_report
from loaderdoctor.session import Session
from loaderdoctor.stage import StageResult
from loaderdoctor.target import Target

ALL_STAGES = ["baseline", "script-form", "loader-only", "workers", "transforms", "context", "confirm"]


@dataclass
class ProbeOptions:
    out: str = "loaderdoctor-report"
    timeout: float = 60.0
    first_batch_timeout: float | None = None
    budget: float = 600.0
    steps: int = 50
    warmup: int = 3
    stages: list[str] = field(default_factory=lambda: list(ALL_STAGES))
    max_workers: int | None = None
    stack_method: str = "auto"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan(opts: ProbeOptions) -> list[str]:
    unknown = [s for s in opts.stages if s not in ALL_STAGES]
    if unknown:
        raise LoaderDoctorError(
            f"Unknown stage(s): {', '.join(unknown)}. Stages: {', '.join(ALL_STAGES)}.", EXIT_USAGE)
    if "baseline" not in opts.stages:
        raise LoaderDoctorError("The baseline stage is needed: every other stage is measured against it.", EXIT_USAGE)
    return [s for s in ALL_STAGES if s in opts.stages]


def _source(file: str | None, line: int | None, context: int = 3) -> list[dict] | None:
    if not file or not line:
        return None
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    lo, hi = max(1, line - context), min(len(lines), line + context)
    return [{"line": n, "text": lines[n - 1], "hit": n == line} for n in range(lo, hi + 1)]


def attach_sources(report: dict) -> None:
    """The culprits' source lines, read once when the report is written (re-rendering a
    saved report.json uses these, not the files)."""
    for item in (report.get("hangs") or []) + (report.get("crashes") or []):
        c = item.get("culprit")
        if c and "source" not in c:
            c["source"] = _source(c.get("file"), c.get("line"))


def write_plots(report: dict, out_dir: str) -> list[str]:
    from loaderdoctor.render import plots

    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    names = []
    for name, png in plots.render_all(report).items():
        with open(os.path.join(out_dir, "plots", f"{name}.png"), "wb") as f:
            f.write(png)
        names.append(name)
    return names


def write_frames(session: Session, out_dir: str) -> list[str]:
    """Tidy pandas frames of what was sampled and timed, one row per observation, with the
    stage as a column: samples.csv (per process, per sample), system.csv, steps.csv."""
    import pandas as pd

    samples, system, steps = [], [], []
    for st in session.stages:
        sm = st.get("samples") or {}
        samples.extend(sm.get("rows") or [])
        system.extend(sm.get("system") or [])
        for loader, ls in metrics.steps_by_loader(st.get("events") or []).items():
            for k, x in enumerate(ls.steps):
                steps.append({"stage": st["name"], "loader": loader, "iterator": x.iterator, "batch": x.index,
                              "step": k, "wait_s": x.wait, "compute_s": x.compute, "samples": x.samples,
                              "first_of_iterator": x.first, "startup_s": x.startup})
    written = []
    for name, rows in (("samples.csv", samples), ("system.csv", system), ("steps.csv", steps)):
        if rows:
            pd.DataFrame(rows).to_csv(os.path.join(out_dir, name), index=False)
            written.append(name)
    return written


def write_outputs(session: Session, out_dir: str, formats: tuple[str, ...] = ("json", "md", "html")) -> dict:
    """session.json (raw), report.json, report.md (+ plots/), report.html. Returns the
    report and {format: path}."""
    os.makedirs(out_dir, exist_ok=True)
    session.save(os.path.join(out_dir, "session.json"))
    report = build_report(session)
    attach_sources(report)
    report["plots"] = write_plots(report, out_dir) if "md" in formats else []
    report["frames"] = write_frames(session, out_dir)
    paths = {}
    for fmt in formats:
        path = os.path.join(out_dir, f"report.{fmt}")
        with open(path, "w", encoding="utf-8") as f:
            get_renderer(fmt)(report, f)
        paths[fmt] = path
    return {"report": report, "paths": paths}


def _never_iterated(res: StageResult) -> str | None:
    """Why the target is not probe-able, when it never started iterating a DataLoader."""
    if any(e.get("e") in ("it", "b", "it_error") for e in res.events) or res.status == "hang":
        return None
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
    by = metrics.steps_by_loader(res.events)
    idx = metrics.train_loader(by)
    loaders = {l["index"]: l for l in metrics.loaders_from_events(res.events)}
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


def probe(target: Target, opts: ProbeOptions, *, on_stage: Callable[[str, StageResult | None], None] | None = None,
          on_event: Callable[[dict], None] | None = None) -> dict:
    wanted = plan(opts)
    gpus = Gpus()
    session = Session(target=target.to_dict(), options=opts.to_dict(), environment=envinfo.collect(gpus))
    out_dir = opts.out
    os.makedirs(out_dir, exist_ok=True)
    ctx = stages.Ctx(target, opts, session, out_dir, on_stage=on_stage, on_event=on_event, gpus=gpus)
    session.notes["static"] = target_static(target)
    try:
        base = ctx.run("baseline")
        if base is None:
            raise LoaderDoctorError("The --budget is too small to run even the baseline.", EXIT_USAGE)
        why = _never_iterated(base)
        if why:
            session.ended = time.time()
            written = write_outputs(session, out_dir)
            raise LoaderDoctorError(why, EXIT_USAGE, report_path=written["paths"].get("md"))
        if target.kind == "notebook" and "script-form" in wanted:
            stages.script_form(ctx)
        ctx.train_loader = _train_loader(base)
        ctx.train_site = ctx.train_loader.get("site")
        base_ok = base.status == "ok"
        lo = None
        if "loader-only" in wanted or "workers" in wanted:
            if base_ok:
                lo = stages.loader_only(ctx) if "loader-only" in wanted else None
            else:
                ctx.skip("loader-only", f"the baseline ended in '{base.status}': a throughput measurement would too")
        choice = None
        if "workers" in wanted:
            if base_ok:
                choice = stages.workers_sweep(ctx, lo)
                stages.try_prefetch(ctx, choice)
            else:
                ctx.skip("workers", f"the baseline ended in '{base.status}'")
        if "transforms" in wanted:
            stages.transforms(ctx)
        if "context" in wanted:
            stages.start_methods(ctx, base)
        if "confirm" in wanted:
            settings = tuning.recommended_settings(ctx.train_loader, choice, ctx.train_loader.get("iterators", 0),
                                                   session.notes.get("prefetch"))
            session.notes["confirm_settings"] = settings
            if not base_ok:
                ctx.skip("confirm", f"the baseline ended in '{base.status}'")
            elif not settings:
                ctx.skip("confirm", "the current loader settings are already the best measured: nothing to confirm")
            else:
                stages.confirm(ctx, settings)
    except stages.Interrupted:
        session.interrupted = True
        session.ended = time.time()
        written = write_outputs(session, out_dir)
        raise LoaderDoctorError(
            "Interrupted: loaderdoctor ended the script and its workers. A partial report of what was measured "
            f"is in {written['paths'].get('md')}.", EXIT_INTERRUPTED, report_path=written["paths"].get("md"))
    for name in wanted:
        if not session.stage(name) and not any(s["name"] == name for s in session.skipped) \
                and name not in ("workers", "context", "script-form"):
            ctx.skip(name, "not run")
    session.ended = time.time()
    return write_outputs(session, out_dir)
