"""`loaderdoctor check`: the real loop for N steps under the watchdog, nothing else."""

from __future__ import annotations

import os
import time

from loaderdoctor.analysis.report import build_report
from loaderdoctor.errors import (
    EXIT_CRASH,
    EXIT_HANG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    LoaderDoctorError,
)
from loaderdoctor.observe import envinfo
from loaderdoctor.orchestrate import distwatch
from loaderdoctor.orchestrate.outputs import redact_run_files, safe_session
from loaderdoctor.orchestrate.probe import never_iterated
from loaderdoctor.orchestrate.supervise import StageSpec, run_stage
from loaderdoctor.orchestrate.target import Target
from loaderdoctor.session import Session


def check(target: Target, *, timeout: float, steps: int = 20, first_batch_timeout: float | None = None,
          out_dir: str = "loaderdoctor-check", stack_method: str = "auto", nproc_per_node: int | None = None) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    node = distwatch.node_info(target, nproc_per_node)
    spec = StageSpec(name="check", target=target.path, argv=target.argv, recorded_argv=target.recorded_argv,
                     steps=steps, warmup=0, timeout=timeout, first_batch_timeout=first_batch_timeout,
                     stack_method=stack_method, nproc_per_node=nproc_per_node)
    res = run_stage(spec, out_dir)
    redact_run_files(out_dir, target.secrets)
    why = never_iterated(res) if res.status not in ("interrupted", "hang") else None  # a freeze is the gate's business
    if why:
        raise LoaderDoctorError(why, EXIT_USAGE)
    session = safe_session(Session(target=target.to_dict(), options={"timeout": timeout, "steps": steps, "warmup": 0},
                                   environment=envinfo.collect(), stages=[res.to_dict()], ended=time.time(),
                                   node=node),
                           target.secrets)
    report = build_report(session)
    detail = session.stages[0].get("detail", "")
    batches = res.batches
    if res.status == "hang":
        code = EXIT_HANG
    elif res.status in ("crash", "failed"):
        code = EXIT_CRASH
    elif res.status == "interrupted":
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_OK
    return {"exit_code": code, "status": res.status, "detail": detail, "seconds": res.seconds,
            "batches": batches, "steps": steps, "target": target.path, "hang": (report["hangs"] or [None])[0],
            "crash": (report["crashes"] or [None])[0], "findings": report["findings"],
            "stack_dir": res.stack_dir, "stderr_path": res.stderr_path}
