"""Rules of `loaderdoctor attach`: hang (the job is frozen), data-bound / compute-bound from the
sampled data-wait share, with the probe's thresholds."""

from __future__ import annotations

from loaderdoctor.analysis.attach_view import MIN_SAMPLES, PROGRESS_CPU_SHARE
from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _pct, _where


def rule_hang(hangs: list[dict], mains: list[dict]) -> list[Finding]:
    out = []
    for h in hangs:
        m = next(x for x in mains if x["pid"] == h["processes"][0]["pid"])
        c, w = h.get("culprit"), h.get("waiting") or {}
        rank = f" (rank {h['rank']})" if h.get("rank") is not None else ""
        if m["frozen_on"] == "batch":
            ow = h.get("owing_worker")
            owes = (f" It waits for the batch owed by worker {ow['worker_id']} (pid {ow['pid']}, task {ow['task']}; "
                    f"known from {ow['how']})." if ow else "")
            wk = "; ".join(f"worker pid {x['pid']}: {x['why']}" for x in m["workers"]) or "no worker process"
            ev = (f"For {h['window_s']} s the main thread{rank} waited for a batch in all {m['samples']} samples and "
                  f"no worker made progress ({wk}).{owes} Culprit: {_where(c)}.")
            busy_owner = next((x for x in m["workers"] if ow and x["pid"] == ow["pid"]), None)
            if busy_owner and (busy_owner["cpu_pct"] or 0) >= 100 * PROGRESS_CPU_SHARE:
                ev += (f" That worker used {busy_owner['cpu_pct']}% of a core: it may be computing one very slow "
                       "batch (or spinning) rather than blocked.")
            fix = (f"A DataLoader worker never returned from {c.get('function')} ({c.get('file')}:{c.get('line')}). "
                   "Make that call finish or time out; to see it fail fast, pass `timeout=60` to the DataLoader."
                   if c and c.get("role") == "worker" else
                   "Read the stacks below for the processes that did not move.")
        else:
            fr = w.get("frame") or {}
            ev = (f"For {h['window_s']} s the main thread{rank} showed the same stack in all {m['samples']} samples, "
                  f"using {m['cpu_pct']}% of a core, and never entered the DataLoader. It waits on {w.get('text')}: "
                  f"{fr.get('function')} ({fr.get('file')}:{fr.get('line')}). Culprit: {_where(c)}.")
            fix = (f"The training loop itself is stuck in {c.get('function')} ({c.get('file')}:{c.get('line')}), not "
                   "in the data pipeline. Fix that call (give it a timeout); the loader is not the cause."
                   if c else "The training loop is stuck outside the data pipeline; read the main stack below.")
        out.append(Finding("hang", "critical",
                           f"The job made no progress for {h['window_s']} s{rank}: stuck in "
                           f"{c.get('function') if c else 'an unknown frame'}", ev, fix))
    return out


def rule_data_or_compute_bound(share: float | None, ci: list | None, n: int, mains: list[dict], window: float,
                               nxt: str) -> list[Finding]:
    if share is None or n < MIN_SAMPLES:
        return []
    top = next((f for m in mains for f in m["busiest_worker_frames"]), None)
    nw = sum(len(m["workers"]) for m in mains)
    busy = [w["busy_share"] for m in mains for w in m["workers"] if w["busy_share"] is not None]
    ev = (f"In {n} stack samples of the training loop over {window:.1f} s, it was inside the DataLoader in "
          f"{_pct(share)} (95% CI {_pct(ci[0])}-{_pct(ci[1])}).")
    if busy:
        ev += f" {nw} worker(s), busy in {_pct(sum(busy) / len(busy))} of their samples on average."
    if top:
        ev += f" Busiest worker frame: {top['function']} ({top['file']}:{top['line']}), {_pct(top['share'])} of them."
    if share >= THRESHOLDS["data_bound_fraction"]:
        return [Finding("data-bound", "warning", f"Training waits on data {_pct(share)} of the time", ev,
                        f"Feed the step faster (more workers, a cheaper transform); attach changed nothing. Measure "
                        f"which change helps with: {nxt}")]
    if share < THRESHOLDS["compute_bound_fraction"]:
        return [Finding("compute-bound", "info", "The data loader is not what limits training", ev,
                        "Nothing to change in the DataLoader; speed up the model step if training is too slow.")]
    return []
