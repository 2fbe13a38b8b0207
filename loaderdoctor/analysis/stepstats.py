"""Pure functions: a stage's raw events -> loaders and step statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from loaderdoctor.protocol import loader_warmup  # noqa: F401  (the warm-up rule, used here and re-exported)


@dataclass
class Step:
    loader: int
    iterator: int  # which iterator (epoch) of that loader, 0-based
    index: int  # batch index inside the iterator
    wait: float
    compute: float | None
    samples: int
    first: bool
    startup: float | None = None


@dataclass
class LoaderSteps:
    loader: int
    steps: list[Step] = field(default_factory=list)
    iterators: int = 0


def steps_by_loader(events: list[dict]) -> dict[int, LoaderSteps]:
    """Rebuild each batch's (wait, compute) from the event stream. A batch's compute is
    carried by the next batch's event ("c") or the iterator's "end" event."""
    out: dict[int, LoaderSteps] = {}
    pending: dict[int, Step] = {}  # loader -> last batch whose compute is still open
    for ev in events:
        kind = ev.get("e")
        if kind == "it":
            ls = out.setdefault(ev["l"], LoaderSteps(ev["l"]))
            ls.iterators += 1
            pending.pop(ev["l"], None)
        elif kind == "b":
            l = ev["l"]
            ls = out.setdefault(l, LoaderSteps(l))
            first = "s" in ev
            if first and ls.iterators == 0:
                ls.iterators = 1
            prev = pending.get(l)
            if prev is not None and not first and ev.get("c") is not None:
                prev.compute = ev["c"]
            step = Step(l, max(0, ls.iterators - 1), ev.get("i", 0), ev["w"], None, ev.get("n", 1),
                        first, ev.get("s"))
            ls.steps.append(step)
            pending[l] = step
        elif kind == "end":
            prev = pending.pop(ev["l"], None)
            if prev is not None and ev.get("c") is not None:
                prev.compute = ev["c"]
    return out


def loaders_from_events(events: list[dict]) -> list[dict]:
    """One entry per construction site: its config (first construction) and instances."""
    sites: dict[int, dict] = {}
    for ev in events:
        if ev.get("e") != "loader":
            continue
        entry = sites.get(ev["l"])
        if entry is None:
            sites[ev["l"]] = {"index": ev["l"], "site": ev.get("site"), "instances": 1,
                              "built_at": ev.get("built_at"), "via": ev.get("via"), "origin": ev.get("origin"),
                              "overridden": ev.get("overridden"), **(ev.get("config") or {})}
        else:
            entry["instances"] += 1
    return [sites[k] for k in sorted(sites)]


def _role_entry() -> dict:
    return {"batches": 0, "no_grad": 0, "optimizer_steps": 0, "wait_s": 0.0}


def loader_roles(events: list[dict]) -> dict[int, dict]:
    """What each loader's batches were used for, from the events: optimizer steps that followed
    its batches ("o" events name the loader of the last batch drawn, and in "ls" every loader
    that fed the step when several were consumed together), how many of its batches were drawn
    with gradients disabled (an evaluation loop's no_grad/inference_mode), and its data wait."""
    out: dict[int, dict] = {}
    for ev in events:
        kind = ev.get("e")
        if kind == "b":
            d = out.setdefault(ev["l"], _role_entry())
            d["batches"] += 1
            d["wait_s"] += ev.get("w") or 0.0
            if ev.get("g") == 0:
                d["no_grad"] += 1
        elif kind == "o" and ev.get("l") is not None:
            for l in ev.get("ls") or [ev["l"]]:
                out.setdefault(l, _role_entry())["optimizer_steps"] += 1
    return out


def train_loader(by_loader: dict[int, LoaderSteps], events: list[dict] | None = None) -> int | None:
    """The training loader is the one that feeds the optimizer: the loader whose batches were
    followed by the most optimizer steps; among loaders that fed the same steps (zip(a, b)), the
    one the step waited on longest. Without any optimizer step (a loop that updates by
    hand, loaderdoctor's own drains): the one with the most batches drawn with gradients
    enabled, then the one with the most batches."""
    if not by_loader:
        return None
    roles = loader_roles(events or [])
    with_steps = {l: d["optimizer_steps"] for l, d in roles.items() if d["optimizer_steps"] and l in by_loader}
    if with_steps:
        return max(with_steps, key=lambda l: (with_steps[l], roles[l]["wait_s"], -l))
    graded = {l: d["batches"] - d["no_grad"] for l, d in roles.items() if l in by_loader}
    if any(v > 0 for v in graded.values()) and any(d["no_grad"] for d in roles.values()):
        return max(graded, key=lambda l: (graded[l], -l))
    return max(by_loader.values(), key=lambda ls: (len(ls.steps), -ls.loader)).loader


def role_of(index: int, train_idx: int | None, roles: dict[int, dict]) -> tuple[str, str]:
    """(role, evidence) of one loader: train, eval or other, and why."""
    d = roles.get(index) or _role_entry()
    train_steps = (roles.get(train_idx) or {}).get("optimizer_steps") or 0
    if index == train_idx:
        if d["optimizer_steps"]:
            return "train", f"{d['optimizer_steps']} optimizer steps followed its batches ({d['batches']} drawn)"
        return "train", f"no optimizer step was seen; the most batches drawn with gradients enabled ({d['batches']})"
    if d["batches"] and d["no_grad"] == d["batches"] and not d["optimizer_steps"]:
        return "eval", f"all {d['batches']} of its batches were drawn with gradients disabled (no_grad/inference_mode)"
    if train_steps and 2 * d["optimizer_steps"] >= train_steps:
        return "other", (f"consumed together with the training loader: its batches fed {d['optimizer_steps']} of the "
                         f"same optimizer steps ({d['batches']} drawn, {d['wait_s']:.2f} s of data wait); the sweep "
                         "and the confirm tune the training loader only")
    return "other", f"{d['batches']} batches drawn, {d['optimizer_steps']} optimizer steps after them"


def gpu_idle(events: list[dict], loader: int | None, steps: list[Step]) -> dict | None:
    """On CUDA: the GPU-idle gap at each batch boundary of the training loader ("gg" events,
    child/cuda.py), its distribution, and its share of the measured steps' time."""
    gaps = [e["g"] for e in events if e.get("e") == "gg" and e.get("l") == loader]
    total = sum(s.wait + (s.compute or 0.0) for s in steps)
    if len(gaps) < 5 or total <= 0:
        return None
    gaps = gaps[-len(steps):] if len(gaps) > len(steps) else gaps
    return {"boundaries": len(gaps), "gap_s": _dist(gaps), "fraction": round(min(1.0, sum(gaps) / total), 4)}


def loop_boundaries(events: list[dict], loader: int | None, skip: int) -> dict | None:
    """The loop's own boundary, from the optimizer's steps on the training loader: per step,
    the time from the previous step's end to the model's first forward (loading, a wrapper's
    work on the batch such as timm's PrefetchLoader normalising it, moving it to the device)
    and the whole step period. The first `skip` steps are warm-up."""
    ts, fs = [], []
    for ev in events:
        if ev.get("e") == "o" and ev.get("l") == loader:
            ts.append(ev["t"])
            fs.append(ev.get("f"))
    periods = [(b - a, f) for a, b, f in zip(ts, ts[1:], fs[1:]) if f is not None and b > a]
    periods = periods[skip:]
    if len(periods) < 5:
        return None
    total = sum(p for p, _ in periods)
    waits = [f for _, f in periods]
    return {"steps": len(periods), "wait_fraction": round(min(1.0, sum(waits) / total), 4) if total > 0 else None,
            "wait_s": _dist(waits), "period_s": _dist([p for p, _ in periods])}


def measured_steps(ls: LoaderSteps, warmup: int) -> list[Step]:
    """Steps that count: not an iterator's first batch (worker start-up), not among the
    first `warmup` batches, and with their compute closed."""
    out = []
    seen = 0
    for s in ls.steps:
        if s.first:
            continue
        seen += 1
        if seen <= warmup:
            continue
        if s.compute is not None:
            out.append(s)
    return out


def quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    pos = (len(ys) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (pos - lo)


def _dist(xs: list[float]) -> dict | None:
    if not xs:
        return None
    return {"median": round(median(xs), 6), "p90": round(quantile(xs, 0.9), 6)}


def step_summary(ls: LoaderSteps | None, warmup: int) -> dict:
    """The baseline block of report.json, from one loader's steps."""
    if ls is None:
        return {"steps": 0, "samples_per_s": None, "data_wait_fraction": None, "step_s": None,
                "wait_s": None, "compute_s": None, "first_batch_s": None}
    steps = measured_steps(ls, warmup)
    firsts = [s.startup for s in ls.steps if s.first and s.startup is not None]
    waits = [s.wait for s in steps]
    computes = [s.compute for s in steps]
    totals = [w + c for w, c in zip(waits, computes)]
    total_t = sum(totals)
    samples = sum(s.samples for s in steps)
    eff = effective_rate(ls)
    short = short_epochs(ls, warmup)
    return {
        "short_epochs": short,  # rates and speedups are then per epoch, start-up included
        "steps": len(steps),
        "effective_samples_per_s": eff["samples_per_s"],
        "startup_share": eff["startup_share"],
        "samples_per_s": round(samples / total_t, 3) if total_t > 0 else None,
        "data_wait_fraction": round(sum(waits) / total_t, 4) if total_t > 0 else None,
        "step_s": _dist(totals),
        "wait_s": _dist(waits),
        "compute_s": _dist(computes),
        "first_batch_s": round(firsts[0], 6) if firsts else None,
        "first_batch_s_all": [round(x, 6) for x in firsts],
        "iterators": ls.iterators,
        "batches_seen": len(ls.steps),
        "loader_index": ls.loader,
    }


def effective_rate(ls: LoaderSteps) -> dict:
    """Throughput as the user lives it: every batch after the very first one, with the
    start-up of each later iterator (workers re-created per epoch) counted as time spent.
    Also the share of that time that was iterator start-up."""
    total = startup = 0.0
    samples = 0
    for k, s in enumerate(ls.steps):
        if k == 0 or s.compute is None:
            continue
        if s.first:
            startup += s.startup if s.startup is not None else s.wait
            total += (s.startup if s.startup is not None else s.wait) + s.compute
        else:
            total += s.wait + s.compute
        samples += s.samples
    if total <= 0:
        return {"samples_per_s": None, "startup_share": None}
    return {"samples_per_s": round(samples / total, 3), "startup_share": round(startup / total, 4)}


def timeline(ls: LoaderSteps | None, limit: int = 2000) -> list[dict]:
    """Per-step rows for plots (downsampled by striding past `limit`)."""
    if ls is None:
        return []
    rows = [{"i": k, "iterator": s.iterator, "wait": s.wait, "compute": s.compute, "first": s.first}
            for k, s in enumerate(ls.steps)]
    if len(rows) > limit:
        stride = -(-len(rows) // limit)
        rows = rows[::stride]
    return rows


def epoch_rate(ls: LoaderSteps) -> float | None:
    """samples/s over whole epochs, every iterator's start-up included (the first one's too)."""
    total = samples = 0.0
    for s in ls.steps:
        if s.compute is None:
            continue
        total += (s.startup if s.first and s.startup is not None else s.wait) + s.compute
        samples += s.samples
    return round(samples / total, 3) if total > 0 else None


def short_epochs(ls: LoaderSteps, warmup: int) -> bool:
    """Epochs so short that start-up and the workers' prefetch fill them: fewer batches per
    iterator than twice the warm-up (which is at least num_workers x prefetch_factor). A
    steady-state rate of such a loader excludes most of what the user waits for."""
    if not ls.iterators:
        return False
    return len(ls.steps) / ls.iterators < 2 * max(1, warmup)


def drain_rate(stage: dict) -> float | None:
    """Loader-only samples/s of a drain stage: steady state after the warm-up, or per epoch
    with start-up when epochs are short (short_epochs)."""
    if stage.get("status") != "ok":
        return None
    by = steps_by_loader(stage["events"])
    idx = train_loader(by, stage["events"])
    if idx is None:
        return None
    cfg = next((l for l in loaders_from_events(stage["events"]) if l["index"] == idx), None)
    warm = loader_warmup(cfg, 1)
    if short_epochs(by[idx], warm):
        return epoch_rate(by[idx])
    return step_summary(by[idx], warm)["samples_per_s"]
