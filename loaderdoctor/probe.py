"""The probe: plan the stages, run each in its own runner child, record, diagnose, render.

    plan -> run stages (each: runner child + watchdog) -> Session -> build_report -> render
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from loaderdoctor import envinfo
from loaderdoctor.errors import EXIT_INTERRUPTED, EXIT_USAGE, LoaderDoctorError
from loaderdoctor.gpu import Gpus
from loaderdoctor.render import get as get_renderer
from loaderdoctor.report import build_report
from loaderdoctor.session import Session
from loaderdoctor.stage import StageResult, StageSpec, run_stage
from loaderdoctor.target import Target

ALL_STAGES = ["baseline"]


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


def write_outputs(session: Session, out_dir: str, formats: tuple[str, ...] = ("json", "md", "html")) -> dict:
    """session.json (raw), report.json, report.md, report.html. Returns {format: path}."""
    os.makedirs(out_dir, exist_ok=True)
    session.save(os.path.join(out_dir, "session.json"))
    report = build_report(session)
    paths = {}
    for fmt in formats:
        try:
            renderer = get_renderer(fmt)
        except ImportError:
            continue
        path = os.path.join(out_dir, f"report.{fmt}")
        with open(path, "w", encoding="utf-8") as f:
            renderer(report, f)
        paths[fmt] = path
    return {"report": report, "paths": paths}


def _never_iterated(res: StageResult) -> str | None:
    """Why the target is not probe-able, when it never started iterating a DataLoader."""
    if any(e.get("e") in ("it", "b") for e in res.events) or res.status == "hang":
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


def probe(target: Target, opts: ProbeOptions, *, on_stage: Callable[[str, StageResult | None], None] | None = None,
          on_event: Callable[[dict], None] | None = None) -> dict:
    stages = plan(opts)
    gpus = Gpus()
    session = Session(target=target.to_dict(), options=opts.to_dict(), environment=envinfo.collect(gpus))
    out_dir = opts.out
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.monotonic()
    for name in stages:
        left = opts.budget - (time.monotonic() - t_start)
        if left <= 0:
            session.skipped.append({"name": name, "reason": f"the --budget of {opts.budget:g} s was used up"})
            continue
        if on_stage:
            on_stage(name, None)
        spec = StageSpec(name=name, target=target.path, argv=target.argv, steps=opts.steps, warmup=opts.warmup,
                         timeout=opts.timeout, first_batch_timeout=opts.first_batch_timeout, max_seconds=left,
                         stack_method=opts.stack_method)
        res = run_stage(spec, out_dir, on_event=on_event)
        session.stages.append(res.to_dict())
        if on_stage:
            on_stage(name, res)
        if res.status == "interrupted":
            session.interrupted = True
            session.ended = time.time()
            written = write_outputs(session, out_dir)
            raise LoaderDoctorError(
                "Interrupted: loaderdoctor ended the script and its workers. A partial report of what was measured "
                f"is in {written['paths'].get('md')}.", EXIT_INTERRUPTED, report_path=written["paths"].get("md"))
        if name == "baseline":
            why = _never_iterated(res)
            if why:
                session.ended = time.time()
                written = write_outputs(session, out_dir)
                raise LoaderDoctorError(why, EXIT_USAGE, report_path=written["paths"].get("md"))
    session.ended = time.time()
    return write_outputs(session, out_dir)
