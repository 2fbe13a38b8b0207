"""Session (raw) -> report dict (CONTRACT.md, schema_version 1). Pure."""

from __future__ import annotations

import re
from statistics import median

from loaderdoctor.analysis import crash, ranks, samples, stats, stepstats
from loaderdoctor.analysis import rules as diagnose
from loaderdoctor.protocol import DEFAULT_WARMUP
from loaderdoctor.session import Session

SCHEMA_VERSION = 1
STAGE_STATUSES = ("ok", "hang", "crash", "failed", "skipped")  # CONTRACT.md


def _hello(stage: dict | None) -> dict:
    if not stage:
        return {}
    return next((e for e in stage.get("events", []) if e.get("e") == "hello"), {})


def _loaders(stage: dict, train_idx: int | None, by_loader: dict) -> list[dict]:
    """The loaders of a stage with their role (train, eval, other), the evidence for it, and
    each one's cost: the share of the time its batches took (wait and the compute after)."""
    events = stage.get("events", [])
    roles = stepstats.loader_roles(events)
    spent = {i: sum(s.wait + (s.compute or 0.0) for s in ls.steps) for i, ls in by_loader.items()}
    total = sum(spent.values())
    out = []
    for l in stepstats.loaders_from_events(events):
        l["role"], l["evidence"] = stepstats.role_of(l["index"], train_idx, roles)
        l["batches_drawn"] = (roles.get(l["index"]) or {}).get("batches", 0)
        l["cost_share"] = round(spent.get(l["index"], 0.0) / total, 4) if total > 0 else None
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
    by_loader = stepstats.steps_by_loader(stage.get("events", []))
    train_idx = stepstats.train_loader(by_loader, stage.get("events", []))
    loaders = _loaders(stage, train_idx, by_loader)
    ls = by_loader.get(train_idx) if train_idx is not None else None
    cfg = next((l for l in loaders if l["index"] == train_idx), None)
    warm = stepstats.loader_warmup(cfg, warmup)
    summary = stepstats.step_summary(ls, warm)
    loop = stepstats.loop_boundaries(stage.get("events", []), train_idx, warm)
    summary["loader_wait_fraction"] = summary["data_wait_fraction"]
    summary["wait_method"] = "loader"
    if loop and loop["wait_fraction"] is not None and summary["steps"]:
        # the loop's own boundary: a wrapper's work between the loader and the step is data time too
        summary["loop"] = loop
        summary["data_wait_fraction"] = loop["wait_fraction"]
        summary["wait_method"] = "loop boundary"
    return {"loaders": loaders, "summary": summary, "timeline": stepstats.timeline(ls), "train_index": train_idx}


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
        r["stages"].append({"name": st["name"], "status": status, "seconds": st["seconds"],
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
    r["run_id"], r["node"] = session.run_id, session.node
    r["ranks"] = ranks.rank_rows(base, lambda evs: stage_block({"events": evs}, warmup), warmup)  # distributed runs
    r["workers_sweep"] = sweep_rows(session)
    r["sweep"] = session.notes.get("workers_sweep")
    r["prefetch"] = session.notes.get("prefetch")
    r["transforms"], r["collate"], r["pipeline"] = transform_rows(session.stage("transforms"))
    r["confirm"] = confirm_block(session, r["baseline"])
    r["start_methods"] = context_rows(session)
    r["static"] = session.notes.get("static") or {}
    sf = session.stage("script-form")
    r["script_form"] = ({"status": sf["status"], "detail": sf.get("detail", ""),
                         "path": (session.notes.get("script_form") or {}).get("path"),
                         "measured": stage_block(sf, warmup)["summary"]} if sf else None)
    r["preflight"] = preflight(session, r["loaders"])
    r["stage_samples"] = {st["name"]: samples.downsample(st.get("samples")) for st in session.stages
                          if st.get("samples")}
    r["verdict"], r["findings"], r["recommendation"] = diagnose.diagnose(r, best=_candidate(r))
    return r


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


def _first_batch(stage: dict) -> float | None:
    return next((e.get("s") for e in stage.get("events", []) if e.get("e") == "b" and "s" in e), None)


def sweep_rows(session: Session) -> list[dict]:
    """One row per num_workers configuration measured loader-only."""
    notes = session.notes.get("workers_sweep") or {}
    current = notes.get("current")
    rows = []
    for st in session.stages:
        name = st["name"]
        if name == "loader-only" and current is not None:
            n = current
        elif name.startswith("workers-") and name.split("-")[1].isdigit() and not name.endswith("-again"):
            n = int(name.split("-")[1])
        else:
            continue
        peaks = samples.loader_peaks(st.get("samples"))
        load = (notes.get("load") or {}).get(str(n))  # what the sweep decided on (stages.stage_load)
        rate = stepstats.drain_rate(st)
        recheck = (notes.get("recheck") or {}).get(str(n))
        if recheck and recheck.get("again") and rate:
            rate = round((rate + recheck["again"]) / 2, 3)  # measured twice: the mean
        rows.append({"num_workers": n, "status": st["status"], "samples_per_s": rate, "measured_twice": bool(recheck),
                     "first_batch_s": _first_batch(st), "peak_mem_mb": peaks["peak_uss_mb"],
                     "peak_pss_mb": peaks["peak_pss_mb"], "cpu_workers_pct": peaks["cpu_workers_pct"],
                     "cpu_main_pct": peaks["cpu_main_pct"], "cpu_busy_pct": round(100 * load["busy"], 1) if load else None,
                     "stage": name, "current": n == current,
                     "chosen": n == notes.get("choice"), "detail": st.get("detail", "")})
    rows.sort(key=lambda r: r["num_workers"])
    return rows


def transform_rows(stage: dict | None) -> tuple[list[dict], dict | None, dict]:
    """(transforms[], collate, pipeline info) from the transforms stage."""
    if not stage:
        return [], None, {"found": None, "reason": "the transforms stage did not run"}
    events = stage.get("events", [])
    pipe = next((e for e in events if e.get("e") == "pipeline"), None)
    if pipe is None:
        return [], None, {"found": None, "reason": f"the stage ended before the pipeline was located "
                                                   f"({stage['status']}: {stage.get('detail', '')})"}
    ts = stage.get("tstats")
    if not pipe.get("found"):
        collate = None
        if ts and ts["batches"] and ts["fetch_s"] > 0:
            collate = {"ms_per_batch": round(1000 * ts["collate_s"] / ts["batches"], 4),
                       "share": round(ts["collate_s"] / ts["fetch_s"], 4)}
        return [], collate, {"found": False, "reason": pipe.get("reason")}
    names = pipe["names"]
    prefix: dict[int, dict] = {}
    for e in events:
        if e.get("e") == "prefix":
            prefix.setdefault(e["k"], {}).update({e["phase"]: e})
    culprit = None  # position of the step whose prefix failed
    for k in sorted(prefix):
        phases = prefix[k]
        if "error" in phases:
            culprit = (k - 1, "crash", phases["error"])
            break
        if "start" in phases and "ok" not in phases and stage["status"] in ("hang", "crash"):
            culprit = (k - 1, stage["status"], None)
            break
    sample_s = None
    if ts and ts["samples"]:
        sample_s = max(1e-12, (ts["fetch_s"] - ts["collate_s"]) / ts["samples"])
    rows = []
    for pos, name in enumerate(names):
        k = pos + 1
        if culprit and culprit[0] == pos:
            status = culprit[1]
        elif culprit and pos > culprit[0]:
            status = "not reached"
        else:
            status = "ok" if "ok" in prefix.get(k, {}) else "not measured"
        ms = share = None
        if ts and ts["samples"]:
            ms = round(1000 * ts["total"][pos] / ts["samples"], 4)
            share = round(ts["total"][pos] / ts["samples"] / sample_s, 4)
        rows.append({"position": pos, "name": name, "ms_per_sample": ms, "share": share, "status": status})
    collate = None
    if ts and ts["batches"] and ts["fetch_s"] > 0:
        collate = {"ms_per_batch": round(1000 * ts["collate_s"] / ts["batches"], 4),
                   "share": round(ts["collate_s"] / ts["fetch_s"], 4)}
    info = {"found": True, "kind": pipe.get("kind"), "path": pipe.get("path"),
            "sample_ms": round(1000 * sample_s, 4) if sample_s else None,
            "processes_timed": ts["processes"] if ts else 0,
            "culprit": ({"position": culprit[0], "name": names[culprit[0]] if culprit[0] >= 0 else "(none: loading)",
                         "status": culprit[1], "error": culprit[2]} if culprit else None)}
    return rows, collate, info


def _run_rate(session: Session, name: str, warm: int) -> float | None:
    """A real run's rate as the user lives it: samples/s with every later epoch's start-up."""
    st = session.stage(name)
    if not st or st["status"] != "ok":
        return None
    summary = stage_block(st, warm)["summary"]
    if summary.get("short_epochs"):  # start-up and prefetch fill each epoch: count every epoch whole
        by = stepstats.steps_by_loader(st.get("events", []))
        ls = by.get(summary.get("loader_index"))
        return stepstats.epoch_rate(ls) if ls else None
    return summary.get("effective_samples_per_s")


def confirm_block(session: Session, baseline: dict) -> dict | None:
    """The interleaved A/B confirm: per pair the rate of the script as written (A) and with the
    recommended settings (B), the median speedup with its 95% bootstrap interval, and what
    it means (analysis/stats.verdict)."""
    settings = session.notes.get("confirm_settings")
    if settings is None:
        return None
    notes = session.notes.get("confirm") or {"pairs": [{"a": "baseline", "b": "confirm"}]}
    st = session.stage("confirm")
    warm = int(session.options.get("warmup", DEFAULT_WARMUP))
    a = [_run_rate(session, p["a"], warm) for p in notes["pairs"]]
    b = [_run_rate(session, p["b"], warm) for p in notes["pairs"]]
    interval = stats.speedup_interval(a, b) if any(a) and any(b) else None
    verdict = stats.verdict(interval) if interval else "not-measured"
    ok_a, ok_b = [x for x in a if x], [x for x in b if x]
    return {"settings": settings, "status": st["status"] if st else "skipped",
            "pairs": [{**p, "a_samples_per_s": x, "b_samples_per_s": y} for p, x, y in zip(notes["pairs"], a, b)],
            "repeats": (interval or {}).get("repeats", 0), "wanted": notes.get("wanted", 1),
            "cut_by_budget": bool(notes.get("cut_by_budget")),
            "baseline_samples_per_s": round(median(ok_a), 3) if ok_a else None,
            "confirm_samples_per_s": round(median(ok_b), 3) if ok_b else None,
            "speedup": (interval or {}).get("median"), "speedup_ci": (interval or {}).get("ci"),
            "verdict": verdict}


_MISSING_ATTR = re.compile(r"Can't get attribute '([^']+)' on <module '__main__'")


def context_rows(session: Session) -> list[dict]:
    """One row per start method the context stage tried (or the baseline stood for)."""
    notes = session.notes.get("start_methods") or {}
    rows = []
    for method, stage_name in (notes.get("runs") or {}).items():
        st = session.stage(stage_name)
        if st is None:
            continue
        its = [e for e in st.get("events", []) if e.get("e") == "it" and e.get("workers")]
        threads = sorted({t for e in its for t in e.get("threads") or []})
        pools = sorted({p for e in its for p in e.get("native_pools") or []})
        pickle_ev = next((e for e in st.get("events", []) if e.get("e") == "pickle"), None)
        stderr = st.get("stderr_tail") or ""
        missing = _MISSING_ATTR.search(stderr)
        exc = ((st.get("exit") or {}).get("exc") or {})
        text = f"{st.get('detail', '')} {exc.get('message') or ''} {stderr}"
        worker_failed = st["status"] == "hang" or any(e.get("e") == "wexit" for e in st.get("events", [])) \
            or "DataLoader worker" in text
        rows.append({
            "method": method, "stage": stage_name, "status": st["status"], "detail": st.get("detail", ""),
            "threads_at_start": threads, "native_pools": pools,
            "cuda_init": any(e.get("cuda_init") for e in its),
            "pickle": pickle_ev, "bootstrap_error": "bootstrapping phase" in stderr,
            "missing_main_attr": missing.group(1) if missing else None,
            "reruns": st.get("reruns") or [], "worker_failed": worker_failed,
            "error": f"{exc.get('type')}: {(exc.get('message') or '').strip().splitlines()[0]}" if exc.get("type")
            and exc.get("message") else None,
        })
    return rows


def preflight(session: Session, loaders: list[dict]) -> dict:
    """Numbers the pre-flight rules compare: /dev/shm and the open-file limit against what
    the training loader keeps in flight, CUDA at fork, threads per worker."""
    env = session.environment
    base = session.stage("baseline") or {}
    train = next((l for l in loaders if l.get("role") == "train"), {})
    idx = train.get("index")
    first = next((e for e in base.get("events", []) if e.get("e") == "b" and e.get("l") == idx and "s" in e), {})
    nw = train.get("num_workers") or 0
    pf = train.get("prefetch_factor") or (2 if nw else 0)
    its = [e for e in base.get("events", []) if e.get("e") == "it" and e.get("l") == idx and e.get("workers")]
    rows = [r for r in ((base.get("samples") or {}).get("rows") or []) if r["role"] == "worker" and "threads" in r]
    worker_threads = [r["threads"] for r in rows]
    by_t: dict[float, int] = {}
    for r in rows:
        by_t[r["t"]] = by_t.get(r["t"], 0) + r["threads"]
    if first.get("bytes") is None:  # no batch arrived: the runner's estimate, if it made one
        est = next((e for e in base.get("events", []) if e.get("e") == "batch_estimate"), None)
        if est:
            first = {"bytes": est["bytes"], "tensors": est["tensors"], "from": "one sample x batch_size"}
    batch_bytes = first.get("bytes")
    return {
        "num_workers": nw, "prefetch_factor": pf if nw else None,
        "start_method": train.get("start_method"),
        "batch_bytes": batch_bytes, "tensors_per_batch": first.get("tensors"),
        "batch_bytes_from": first.get("from", "the first batch") if batch_bytes is not None else None,
        "in_flight_bytes": nw * pf * batch_bytes if nw and batch_bytes is not None else None,
        "in_flight_tensors": nw * pf * first["tensors"] if nw and first.get("tensors") is not None else None,
        "shm_bytes_total": env.get("shm_bytes_total"),
        "open_files_limit": env.get("open_files_limit"),
        "sharing_strategy": next((e["sharing_strategy"] for e in its if e.get("sharing_strategy")), None),
        "cuda_init_at_fork": any(e.get("cuda_init") for e in its) if train.get("start_method") == "fork" else False,
        "worker_threads_max": max(worker_threads) if worker_threads else None,
        "worker_threads_total_max": max(by_t.values()) if by_t else None,
        "cpu_count_effective": env.get("cpu_count_effective"),
    }
