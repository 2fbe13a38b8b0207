"""Pure: the report's tables from the session: the sweep, the transforms, the confirm's pairs,
the start methods, the pre-flight checks, the noise per stage, and the sanity of every figure."""

from __future__ import annotations

import re
from statistics import median

from loaderdoctor.analysis import impact, samples, stats, stepstats, transfer
from loaderdoctor.analysis.rules.common import THRESHOLDS
from loaderdoctor.protocol import DEFAULT_WARMUP
from loaderdoctor.session import Session


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
    idle = stepstats.gpu_idle(stage.get("events", []), train_idx, stepstats.measured_steps(ls, warm) if ls else [])
    if idle:  # GPU truth: the stall that costs money is the GPU running dry, not the host's wait
        summary["gpu_idle"] = idle
        summary["gpu_idle_fraction"] = idle["fraction"]
    copies = transfer.summary(stage.get("events", []), train_idx, warm, (summary.get("step_s") or {}).get("median"))
    if copies:  # the batch's copy to the GPU (child/h2d.py)
        summary["h2d"] = copies
    return {"loaders": loaders, "summary": summary, "timeline": stepstats.timeline(ls), "train_index": train_idx}



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


def _run_rate(session: Session, name: str, warm: int, steps: int | None = None) -> float | None:
    """A real run's rate as the user lives it: samples/s with every later epoch's start-up.
    `steps`: over its first batches only, as many as a run measuring that many steps draws
    (the baseline in the confirm's first pair, against runs shorter than it)."""
    st = session.stage(name)
    if not st or st["status"] != "ok":
        return None
    summary = stage_block(st, warm)["summary"]
    cut = summary.get("steps", 0) - steps if steps else 0
    if summary.get("short_epochs") or cut > 0:
        by = stepstats.steps_by_loader(st.get("events", []))
        ls = by.get(summary.get("loader_index"))
        if ls is None:
            return None
        if cut > 0:
            kept = ls.steps[:max(2, len(ls.steps) - cut)]
            ls = stepstats.LoaderSteps(ls.loader, kept, sum(1 for s in kept if s.first))
        # start-up and prefetch fill each epoch when epochs are short: count every epoch whole
        return stepstats.epoch_rate(ls) if summary.get("short_epochs") else stepstats.effective_rate(ls)["samples_per_s"]
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
    a = [_run_rate(session, p["a"], warm, notes.get("steps")) for p in notes["pairs"]]
    b = [_run_rate(session, p["b"], warm, notes.get("steps")) for p in notes["pairs"]]
    interval = stats.speedup_interval(a, b) if any(a) and any(b) else None
    verdict = stats.verdict(interval) if interval else "not-measured"
    ok_a, ok_b = [x for x in a if x], [x for x in b if x]
    return {"settings": settings, "status": st["status"] if st else "skipped",
            "pairs": [{**p, "a_samples_per_s": x, "b_samples_per_s": y} for p, x, y in zip(notes["pairs"], a, b)],
            "repeats": (interval or {}).get("repeats", 0), "wanted": notes.get("wanted", 1),
            "steps_per_run": notes.get("steps"),
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


TIMED = ("baseline", "confirm", "loader-only", "workers-", "prefetch-")


def noise_rows(session: Session) -> list[dict]:
    """Per timed stage, the CPU cores other processes on the machine took while its batches
    flowed (analysis/samples.outside_load), and whether that is enough to disturb it."""
    env = session.environment
    machine = int(env.get("cpu_count") or env.get("cpu_count_effective") or 1)
    eff = float(env.get("cpu_count_effective") or machine)
    out = []
    for st in session.stages:
        if not st["name"].startswith(TIMED) or st["status"] != "ok":
            continue
        cores = samples.outside_load(st.get("samples"), st.get("window"), machine)
        if cores is not None:
            out.append({"stage": st["name"], "outside_cores": cores,
                        "noisy": cores >= max(THRESHOLDS["noise_cores"], THRESHOLDS["noise_share"] * eff)})
    return out


def sanity(r: dict) -> list[str]:
    """Figures that cannot be right are not shown: a share outside 0..1, a CPU figure above what
    the effective CPUs allow. Each is set to None and said, as a measurement problem."""
    problems = []
    eff = r["environment"].get("cpu_count_effective")
    b = r["baseline"]
    for key in ("data_wait_fraction", "loader_wait_fraction", "startup_share"):
        ok, why = impact.sane_share(b.get(key)) if b.get(key) is not None else (True, None)
        if not ok:
            problems.append(f"baseline {key}: {why}")
            b[key] = None
    for row in r["workers_sweep"]:
        for key in ("cpu_workers_pct", "cpu_main_pct"):
            ok, why = impact.sane_cpu_percent(row.get(key), eff) if row.get(key) is not None else (True, None)
            if not ok:
                problems.append(f"sweep at {row['num_workers']} workers, {key}: {why}")
                row[key] = None
    for t in r["transforms"]:
        ok, why = impact.sane_share(t.get("share")) if t.get("share") is not None else (True, None)
        if not ok:
            problems.append(f"transform {t.get('name')}: {why}")
            t["share"] = None
    return problems
