"""Commands. Declarations only: each command calls one core function; LoaderDoctorError is
turned into its exit code here and nowhere else."""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from loaderdoctor.errors import EXIT_INTERRUPTED, LoaderDoctorError
from loaderdoctor.protocol import DEFAULT_STEPS, DEFAULT_WARMUP
from loaderdoctor.textsafe import clean, clean_tree

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Diagnose PyTorch DataLoader stalls, hangs and throughput.")
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": False}


def _fail(exc: LoaderDoctorError) -> None:
    err.print(f"[bold red]loaderdoctor:[/] {escape(clean(exc.message))}", soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _sigterm_as_interrupt() -> None:
    """Ctrl-C, SIGTERM and a closed terminal (SIGHUP) end the run and keep what was measured.
    The first one raises KeyboardInterrupt and makes every later one ignored at once, so a second
    Ctrl-C cannot land inside the ending of the tree or the writing of the partial report."""
    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


@app.command(context_settings=_EXTRA)
def probe(
    ctx: typer.Context,
    target: Optional[str] = typer.Argument(None, help="A .py training script; none runs the bundled demo."),
    out_dir: str = typer.Option("loaderdoctor-report", "--out", help="Run directory for the reports."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.5, help="No progress for this many seconds = hang."),
    first_batch_timeout: Optional[float] = typer.Option(None, "--first-batch-timeout", min=0.5,
                                                        help="Allowance for a first batch (default 2 x timeout)."),
    budget: float = typer.Option(600.0, "--budget", min=1, help="Bound on the whole probe, in seconds."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", min=1, help="Measured training steps per stage (after warm-up)."),
    warmup: int = typer.Option(DEFAULT_WARMUP, "--warmup", min=0, help="Batches left out of the statistics after the first."),
    stages: Optional[str] = typer.Option(None, "--stages", help="Comma-separated stages to run."),
    start_methods: str = typer.Option("fork,spawn,forkserver", "--start-methods",
                                      help="The start methods the context stage tries (comma-separated)."),
    max_workers: Optional[int] = typer.Option(None, "--max-workers", min=0, help="Upper bound for the sweep."),
    stack_method: str = typer.Option("auto", "--stack-method", help="auto, py-spy or faulthandler."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Interleaved A/B pairs of the confirm run (within the "
                                "budget); a speedup is confirmed only when its 95% interval clears the noise."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final lines."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show events and the derivation."),
    redact: Optional[list[str]] = typer.Option(None, "--redact", help="An argument name whose value is secret "
                                               "(repeatable; key/token/secret/password/auth/credential names always are)."),
    nproc_per_node: Optional[int] = typer.Option(None, "--nproc-per-node", min=1, help="Launch as `torchrun "
                                                 "--nproc_per_node N --standalone` would; every rank is probed."),
    cold_starts: bool = typer.Option(False, "--cold-starts", help="Start every stage as a fresh interpreter (by "
                                     "default the stages after the baseline fork from one that imported torch)."),
) -> None:
    """Run the staged probes on TARGET and write the report."""
    from loaderdoctor.orchestrate import outpaths
    from loaderdoctor.orchestrate import probe as core
    from loaderdoctor.orchestrate import target as target_mod
    from loaderdoctor.render import console as console_view

    _sigterm_as_interrupt()
    try:
        if stack_method not in ("auto", "py-spy", "faulthandler"):
            raise LoaderDoctorError(f"--stack-method must be auto, py-spy or faulthandler, not {stack_method!r}.")
        out_dir = outpaths.check_out_dir(out_dir)
        tgt = target_mod.resolve(target, list(ctx.args), redact)
        opts = core.ProbeOptions(out=out_dir, timeout=timeout, first_batch_timeout=first_batch_timeout,
                                 budget=budget, steps=steps, warmup=warmup, max_workers=max_workers,
                                 stack_method=stack_method, repeats=repeats, nproc_per_node=nproc_per_node,
                                 warm_start=not cold_starts)
        if stages:
            opts.stages = [s.strip() for s in stages.split(",") if s.strip()]
            opts.stages_given = True
        opts.start_methods = list(dict.fromkeys(m.strip() for m in start_methods.split(",") if m.strip()))
        view = console_view.ProbeView(out, quiet=quiet, verbose=verbose)
        view.start(tgt)
        written = core.probe(tgt, opts, on_stage=view.on_stage, on_event=view.on_event if verbose else None)
        view.summary(written["report"], written["paths"])
    except LoaderDoctorError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("[bold red]loaderdoctor:[/] interrupted (Ctrl-C or SIGTERM) before any stage ran; nothing was "
                  "measured.", soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)


@app.command(context_settings=_EXTRA)
def check(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="The training script to gate."),
    timeout: float = typer.Option(..., "--timeout", min=0.5, help="No progress for this many seconds = hang."),
    steps: int = typer.Option(20, "--steps", min=1, help="Training steps that must run."),
    first_batch_timeout: Optional[float] = typer.Option(None, "--first-batch-timeout", min=0.5),
    junit_xml: Optional[str] = typer.Option(None, "--junit-xml", help="Write a JUnit XML report here."),
    out_dir: str = typer.Option("loaderdoctor-check", "--out", help="Where stacks and logs are kept."),
    stack_method: str = typer.Option("auto", "--stack-method", help="auto, py-spy or faulthandler."),
    redact: Optional[list[str]] = typer.Option(None, "--redact", help="An argument name whose value is secret."),
    nproc_per_node: Optional[int] = typer.Option(None, "--nproc-per-node", min=1, help="Launch as `torchrun "
                                                 "--nproc_per_node N --standalone` would; every rank is watched."),
) -> None:
    """CI gate: run the real training loop for N steps under the watchdog."""
    from loaderdoctor.orchestrate import check as core
    from loaderdoctor.orchestrate import outpaths
    from loaderdoctor.orchestrate import target as target_mod
    from loaderdoctor.render import checktext, junit

    _sigterm_as_interrupt()
    try:
        out_dir = outpaths.check_out_dir(out_dir)
        if junit_xml:
            junit_xml = outpaths.check_out_file(junit_xml, "--junit-xml")
        tgt = target_mod.resolve(target, list(ctx.args), redact)
        result = core.check(tgt, timeout=timeout, steps=steps, first_batch_timeout=first_batch_timeout,
                            out_dir=out_dir, stack_method=stack_method, nproc_per_node=nproc_per_node)
    except LoaderDoctorError as exc:
        _fail(exc)
    text = checktext.format_result(result)
    (out if result["exit_code"] == 0 else err).print(escape(text), soft_wrap=True)
    if junit_xml:
        with open(junit_xml, "w", encoding="utf-8") as f:
            junit.write_junit(result, f)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(junit.render_step_summary(result))
    raise typer.Exit(result["exit_code"])


@app.command()
def attach(
    pid: int = typer.Argument(..., help="PID of the running training process (or of its launcher, e.g. torchrun)."),
    duration: float = typer.Option(10.0, "--duration", min=1.0, help="Seconds to sample the live process tree."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1.0,
                                            help="Watchdog mode: sample this long; exit 3 if frozen the whole time."),
    out_dir: str = typer.Option("loaderdoctor-attach", "--out", help="Where the reports are written."),
) -> None:
    """Diagnose a running (or frozen) training process and its workers in place, without stopping it."""
    from loaderdoctor.orchestrate import attach as core

    _sigterm_as_interrupt()
    try:
        result = core.attach(pid, duration=duration, timeout=timeout, out=out_dir)
    except LoaderDoctorError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("[bold red]loaderdoctor:[/] interrupted; the job was not touched and nothing was written.",
                  soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    (out if result["exit_code"] == 0 else err).print(escape(clean(core.format_summary(result))), soft_wrap=True)
    raise typer.Exit(result["exit_code"])


@app.command()
def report(
    report_json: str = typer.Argument(..., help="A report.json written by `loaderdoctor probe`; or `merge`."),
    dirs: Optional[list[str]] = typer.Argument(None, help="`report merge DIR...`: each node's run directory."),
    fmt: str = typer.Option("html", "--format", help="html or md."),
    out_path: Optional[str] = typer.Option(None, "--out", help="Output file (default: beside the JSON); "
                                           "`report merge`: the run directory to write."),
) -> None:
    """Re-render a report from its JSON, without re-running anything. `report merge DIR... [--out DIR]`
    joins the per-node parts of one multi-node run into one report."""
    import json

    from loaderdoctor.orchestrate import outpaths
    from loaderdoctor.render import get as get_renderer

    if report_json == "merge" or dirs:
        _merge(report_json, dirs or [], out_path)
        return
    try:
        if fmt not in ("html", "md"):
            raise LoaderDoctorError(f"--format must be html or md, not {fmt!r}.")
        try:
            with open(report_json, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise LoaderDoctorError(f"{report_json}: no such file.") from None
        except (OSError, ValueError) as exc:
            raise LoaderDoctorError(f"{report_json} is not a readable report.json ({exc}).") from None
        data = clean_tree(data)  # a report written before the sanitizer may hold undecodable text
        if not isinstance(data, dict) or data.get("schema_version") != 1:
            raise LoaderDoctorError(f"{report_json} is not a loaderdoctor report.json (schema_version 1).")
        path = out_path or os.path.join(os.path.dirname(os.path.abspath(report_json)), f"report.{fmt}")
        path = outpaths.check_out_file(path, "--out")
        with open(path, "w", encoding="utf-8") as f:
            get_renderer(fmt)(data, f)
    except LoaderDoctorError as exc:
        _fail(exc)
    out.print(f"Wrote {escape(path)}")


def _merge(word: str, dirs: list[str], out_dir: Optional[str]) -> None:
    from loaderdoctor.orchestrate import merge as core
    from loaderdoctor.orchestrate import outpaths

    try:
        if word != "merge":
            raise LoaderDoctorError(f"`loaderdoctor report` takes one report.json (or `merge DIR...`), not {word!r} "
                                    "and more.")
        out_dir = outpaths.check_out_dir(out_dir or "loaderdoctor-merged")
        written = core.merge(dirs, out_dir)
    except LoaderDoctorError as exc:
        _fail(exc)
    r = written["report"]
    out.print(f"Merged {len(dirs)} parts of run {escape(str(r.get('run_id')))}: {len(r.get('ranks') or [])} ranks, "
              f"verdict {escape(str(r.get('verdict')))}.")
    for path in written["paths"].values():
        out.print(f"Wrote {escape(path)}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
