"""Session (raw) -> report dict (CONTRACT.md, schema_version 1). Pure."""

from __future__ import annotations

from loaderdoctor import crash, diagnose, metrics
from loaderdoctor.session import Session

SCHEMA_VERSION = 1


def _hello(stage: dict | None) -> dict:
    if not stage:
        return {}
    return next((e for e in stage.get("events", []) if e.get("e") == "hello"), {})


def _loaders(stage: dict, train_idx: int | None) -> list[dict]:
    out = []
    for l in metrics.loaders_from_events(stage.get("events", [])):
        l["role"] = "train" if l["index"] == train_idx else "other"
        out.append(l)
    return out


def threads_at_fork(stage: dict, loaders: list[dict]) -> list[str]:
    forked = {l["index"] for l in loaders if l.get("start_method") == "fork" and (l.get("num_workers") or 0) > 0}
    names: list[str] = []
    for e in stage.get("events", []):
        if e.get("e") == "it" and e.get("l") in forked and e.get("workers"):
            for n in e.get("threads") or []:
                if n not in names:
                    names.append(n)
    return names


def stage_block(stage: dict, warmup: int) -> dict:
    """Loaders, step summary and timeline of one stage."""
    by_loader = metrics.steps_by_loader(stage.get("events", []))
    train_idx = metrics.train_loader(by_loader)
    loaders = _loaders(stage, train_idx)
    ls = by_loader.get(train_idx) if train_idx is not None else None
    return {"loaders": loaders, "summary": metrics.step_summary(ls, warmup),
            "timeline": metrics.timeline(ls), "train_index": train_idx}


def build_report(session: Session) -> dict:
    warmup = int(session.options.get("warmup", 3))
    base = session.stage("baseline")
    env = dict(session.environment)
    hello = _hello(base)
    env["torch"] = hello.get("torch", env.get("torch"))
    env["start_method_default"] = hello.get("start_method_default", env.get("start_method_default"))

    r: dict = {
        "schema_version": SCHEMA_VERSION,
        "tool": session.tool,
        "target": session.target,
        "environment": env,
        "loaders": [],
        "baseline": metrics.step_summary(None, warmup),
        "stages": [],
        "workers_sweep": [],
        "transforms": [],
        "collate": None,
        "hangs": [],
        "crashes": [],
        "interrupted": session.interrupted,
        "options": session.options,
    }
    timelines = {}
    for st in session.stages:
        r["stages"].append({"name": st["name"], "status": st["status"], "seconds": st["seconds"],
                            "detail": st.get("detail", "")})
        block = stage_block(st, warmup)
        timelines[st["name"]] = block["timeline"]
        if st["name"] == "baseline":
            r["loaders"] = block["loaders"]
            r["baseline"] = block["summary"]
        if st.get("hang"):
            h = dict(st["hang"])
            h["threads_at_fork"] = threads_at_fork(st, block["loaders"])
            r["hangs"].append(h)
        if st["status"] == "crash":
            exits: dict = {}
            for e in st.get("events", []):
                if e.get("e") == "wexit":
                    exits.update(e.get("codes") or {})
            c = crash.classify(st["name"], (st.get("exit") or {}).get("exc"), st.get("returncode"),
                               st.get("fatal_dumps") or [], st.get("oom_kills") or 0, exits)
            if c:
                r["crashes"].append(c)
    for sk in session.skipped:
        r["stages"].append({"name": sk["name"], "status": "skipped", "seconds": 0.0, "detail": sk["reason"]})
    if base is None or not r["baseline"]["steps"]:
        why = (base or {}).get("detail") or "the baseline stage did not run"
        r["baseline"]["unmeasured_reason"] = why
    r["timelines"] = timelines
    r["samples"] = session.samples
    v, findings, rec = diagnose.diagnose(r)
    r["verdict"] = v
    r["findings"] = findings
    r["recommendation"] = rec
    return r
