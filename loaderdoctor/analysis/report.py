"""Session (raw) -> report dict (CONTRACT.md, schema_version 1). Pure."""

from __future__ import annotations

from loaderdoctor.analysis import (
    crash,
    datafacts,
    impact,
    ranks,
    samples,
    stepstats,
    transfer,
)
from loaderdoctor.analysis import rules as diagnose
from loaderdoctor.analysis.tables import (
    _MISSING_ATTR,
    confirm_block,
    context_rows,
    noise_rows,
    preflight,
    sanity,
    stage_block,
    sweep_rows,
    transform_rows,
)
from loaderdoctor.protocol import DEFAULT_WARMUP
from loaderdoctor.session import Session

SCHEMA_VERSION = 1
STAGE_STATUSES = ("ok", "hang", "crash", "failed", "skipped")  # CONTRACT.md


def _hello(stage: dict | None) -> dict:
    if not stage:
        return {}
    return next((e for e in stage.get("events", []) if e.get("e") == "hello"), {})


def threads_at_fork(stage: dict, loaders: list[dict]) -> list[str]:
    forked = {l["index"] for l in loaders if l.get("start_method") == "fork" and (l.get("num_workers") or 0) > 0}
    names: list[str] = []
    for e in stage.get("events", []):
        if e.get("e") == "it" and e.get("l") in forked and e.get("workers"):
            for n in e.get("threads") or []:
                if n not in names:
                    names.append(n)
    return names


def build_report(session: Session) -> dict:
    warmup = int(session.options.get("warmup", DEFAULT_WARMUP))
    session = ranks.baseline_from_straggler(session, lambda evs: stage_block({"events": evs}, warmup), warmup)
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
        "baseline": stepstats.step_summary(None, warmup),
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
        status = st["status"] if st["status"] in STAGE_STATUSES else "failed"  # e.g. interrupted: see detail
        detail = st.get("detail", "") + ("; started warm (forked with torch imported: see session.json "
                                          "notes.warm_start)" if st.get("warm") else "")
        r["stages"].append({"name": st["name"], "status": status, "seconds": st["seconds"], "detail": detail})
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
            c = crash_record(st)
            if c:
                r["crashes"].append({**c, "rank": st["rank"]} if st.get("rank") is not None else c)
    for sk in session.skipped:
        r["stages"].append({"name": sk["name"], "status": "skipped", "seconds": 0.0, "detail": sk["reason"]})
    if base is None or not r["baseline"]["steps"]:
        why = (base or {}).get("detail") or "the baseline stage did not run"
        r["baseline"]["unmeasured_reason"] = why
    if r["baseline"].get("samples_per_s"):  # the reference for per-sample costs (transforms)
        r["baseline"]["ms_per_sample"] = round(1000 / r["baseline"]["samples_per_s"], 3)
    r["timelines"] = timelines
    r["noise"] = noise_rows(session)
    r["run_id"], r["node"] = session.run_id, session.node
    r["ranks"] = ranks.rank_rows(base, lambda evs: stage_block({"events": evs}, warmup), warmup)  # distributed runs
    r["workers_sweep"] = sweep_rows(session)
    r["sweep"] = session.notes.get("workers_sweep")
    r["prefetch"] = session.notes.get("prefetch")
    r["pin_memory"] = pin_block(session, r["baseline"], warmup)
    r["transforms"], r["collate"], r["pipeline"] = transform_rows(session.stage("transforms"))
    r["confirm"] = confirm_block(session, r["baseline"])
    r["start_methods"] = context_rows(session)
    r["static"] = session.notes.get("static") or {}
    sf = session.stage("script-form")
    r["script_form"] = ({"status": sf["status"], "detail": sf.get("detail", ""),
                         "path": (session.notes.get("script_form") or {}).get("path"),
                         "measured": stage_block(sf, warmup)["summary"]} if sf else None)
    r["preflight"] = preflight(session, r["loaders"])
    noisy = {n["stage"] for n in r["noise"] if n["noisy"]}
    for row in r["workers_sweep"]:
        row["noisy"] = row["stage"] in noisy
    for p in (r["confirm"] or {}).get("pairs") or []:
        p["noisy"] = p["a"] in noisy or p["b"] in noisy
    r["measurement_problems"] = sanity(r)
    r["stage_samples"] = {st["name"]: samples.downsample(st.get("samples")) for st in session.stages
                          if st.get("samples")}
    r["data"] = datafacts.data_block(session, r)  # what the data rules read (docs/findings-data.md)
    r["verdict"], r["findings"], r["recommendation"] = diagnose.diagnose(r, best=_candidate(r))
    r["headline"] = headline(r)
    return r


def pin_block(session: Session, baseline: dict, warmup: int) -> dict | None:
    """The pin-memory stage (pin_memory=True, non_blocking copies) against the baseline's copies."""
    st = session.stage("pin-memory")
    if not st or st["status"] != "ok":
        return None
    block = stage_block(st, warmup)
    notes = session.notes.get("pin_memory") or {}
    out = transfer.pinned_comparison(baseline.get("h2d"), block["summary"].get("h2d"), notes.get("rate_unpinned"),
                                     stepstats.drain_rate(st))
    return {**out, "num_workers": notes.get("num_workers"), "helps": transfer.pin_helps(out)} if out else None


def headline(r: dict) -> str | None:
    """How much of what fixing the data path can gain at most (1/(1 - data wait)) the
    recommendation reached: "1.30x of at most 1.54x (confirmed)"."""
    frac = (r.get("baseline") or {}).get("data_wait_fraction")
    rec = r.get("recommendation") or {}
    if r.get("verdict") in ("hang", "crash", "inconclusive") or frac is None:
        return None
    ceiling = impact.impact(frac, None)["ceiling"]
    reached = impact.headline_ceiling(rec.get("measured_speedup"), ceiling)
    return f"{reached} from a faster data path ({rec.get('status')})" if rec.get("measured_speedup") else \
        f"a faster data path can gain {reached}"


def _candidate(r: dict) -> dict | None:
    """The confirmed candidate's full settings: the training loader's, with the confirm's changes."""
    train = next((l for l in r["loaders"] if l.get("role") == "train"), None)
    if not r["confirm"] or train is None:
        return None
    keys = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")
    return {**{k: train.get(k) for k in keys}, "multiprocessing_context": train.get("start_method"),
            **r["confirm"]["settings"]}


def crash_record(st: dict) -> dict | None:
    """A crashed stage's crashes[] entry (crash.classify), with what else the stage says: the
    memory of a SIGKILLed process, a failure to start the workers, a worker's missing attribute."""
    exits: dict = {}
    for e in st.get("events", []):
        if e.get("e") == "wexit":
            exits.update(e.get("codes") or {})
    c = crash.classify(st["name"], (st.get("exit") or {}).get("exc"), st.get("returncode"),
                       st.get("fatal_dumps") or [], _oom_kills(st), exits)
    if not c:
        return None
    if c.get("signal") == "SIGKILL":  # killed from outside: what its memory did, for worker-oom
        c["memory"] = samples.process_memory(st.get("samples"), c.get("pid"), c["role"])
    missing = _MISSING_ATTR.search(st.get("stderr_tail") or "")
    it_err = next((e for e in st.get("events", []) if e.get("e") == "it_error"), None)
    if c["role"] == "main" and it_err and it_err.get("type") == c.get("exception_type"):
        c["role"] = "worker"  # starting the loader's workers failed: a loader failure
        c["starting_workers"] = True
    if c["role"] == "worker" and missing:  # what the worker printed before exiting
        c["missing_main_attr"] = missing.group(1)
        c["worker_error"] = missing.group(0) + ">"
    return c


# ---------------------------------------------------------------- staged probes


def _oom_kills(st: dict) -> dict:
    """The OOM-kill counters that rose in a stage ({source: increase}; a session written
    before the sources were kept has a bare count)."""
    v = st.get("oom_kills")
    if isinstance(v, int):
        return {"oom_kill counter": v} if v > 0 else {}
    return dict(v or {})


