"""Writing a run's outputs: session.json (raw), report.json/.md/.html, plots, pandas frames."""

from __future__ import annotations

import os

from loaderdoctor.analysis import fixpatch, stepstats
from loaderdoctor.analysis.report import build_report
from loaderdoctor.redact import redact_text, redact_tree
from loaderdoctor.render import get as get_renderer
from loaderdoctor.render import trace
from loaderdoctor.session import Session
from loaderdoctor.textsafe import clean_tree


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


def write_plots(pngs: dict[str, bytes], out_dir: str) -> list[str]:
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    names = []
    for name, png in pngs.items():
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
        for loader, ls in stepstats.steps_by_loader(st.get("events") or []).items():
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


PATCH_KEYS = ("num_workers", "persistent_workers", "prefetch_factor", "pin_memory", "multiprocessing_context")


def write_fix_patch(report: dict, out_dir: str) -> str | None:
    """fix.patch: the recommended change as a unified diff of the user's DataLoader call
    (analysis/fixpatch), which `git apply` takes in the script's folder. Only for a measured
    recommendation that changes the call; the report shows the call before and after."""
    rec = report.get("recommendation") or {}
    train = next((l for l in report.get("loaders") or [] if l.get("role") == "train"), None)
    if rec.get("status") not in ("confirmed", "within-noise") or not train or not train.get("origin"):
        return None
    changes = {k: rec.get(k) for k in PATCH_KEYS if rec.get(k) != train.get(k if k != "multiprocessing_context"
                                                                              else "start_method")}
    changes = {k: v for k, v in changes.items() if v is not None and not (k == "multiprocessing_context")}
    if not changes:
        return None
    file, _, line = train["origin"].rpartition(":")
    if not line.isdigit() or not os.path.isfile(file):
        return None
    diff = fixpatch.dataloader_patch(file, int(line), changes)
    if not diff:
        return None
    shown = fixpatch.before_after(file, int(line), changes)
    if shown:
        rec["fix_call"] = {"file": file, "line": int(line), "before": shown[0], "after": shown[1]}
    path = os.path.join(out_dir, "fix.patch")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(diff)
    rec["fix_patch"] = "fix.patch"
    return path


def safe_session(session: Session, secrets: list[str] | tuple = ()) -> Session:
    """The session as it may be written: every text the user's code produced cleaned
    (textsafe.clean: no undecodable byte, no control character) and every secret value of
    the script's arguments as ***. The one boundary where user text enters what we write."""
    return Session.from_dict(clean_tree(redact_tree(session.to_dict(), secrets)))


def redact_run_files(out_dir: str, secrets: list[str] | tuple = ()) -> None:
    """Every text file the stages left under out_dir/stages (the script's stdout/stderr logs,
    stack dumps, hang and rerun records) with the arguments' secret values and URL passwords
    masked, as the report's own text is: a script prints what it was given (argparse's echo, an
    exception naming a key), and py-spy's dump names the command line."""
    for dirpath, _, files in os.walk(os.path.join(out_dir, "stages")):
        for name in files:
            if not name.endswith((".log", ".txt", ".json")):
                continue
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
                masked = redact_text(text, secrets)
                if masked != text:
                    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                        f.write(masked)
            except OSError:
                continue  # a file being removed or unreadable: the report still gets written


def write_outputs(session: Session, out_dir: str, formats: tuple[str, ...] = ("json", "md", "html"),
                  secrets: list[str] | tuple = ()) -> dict:
    """session.json (raw), report.json, report.md (+ plots/), report.html, trace.json.
    Returns the report and {format: path}."""
    os.makedirs(out_dir, exist_ok=True)
    redact_run_files(out_dir, secrets)
    session = safe_session(session, secrets)
    session.save(os.path.join(out_dir, "session.json"))
    report = build_report(session)
    attach_sources(report)
    report = clean_tree(redact_tree(report, secrets))  # the culprits' source lines are user text too
    pngs = None
    if "md" in formats or "html" in formats:  # drawn once, for the Markdown's files and the HTML's data URIs
        from loaderdoctor.render import plots

        pngs = plots.render_all(report)
    report["plots"] = write_plots(pngs, out_dir) if "md" in formats else []
    report["frames"] = write_frames(session, out_dir)
    paths = {}
    patch = write_fix_patch(report, out_dir)  # before rendering: the report shows the call before and after
    if patch:
        paths["patch"] = patch
    for fmt in formats:
        path = os.path.join(out_dir, f"report.{fmt}")
        with open(path, "w", encoding="utf-8") as f:
            if fmt == "html":
                from loaderdoctor.render import html

                html.render(report, f, pngs)
            else:
                get_renderer(fmt)(report, f)
        paths[fmt] = path
    path = os.path.join(out_dir, "trace.json")  # Chrome trace events: opens in Perfetto
    with open(path, "w", encoding="utf-8") as f:
        trace.render(session.to_dict(), f)
    paths["trace"] = path
    return {"report": report, "paths": paths}
