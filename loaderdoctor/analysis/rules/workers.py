"""Rules on what each worker delivers: iterable-duplicates, idle-workers, slow-worker (from
the workers' own fetch events, analysis/workerdata.py)."""

from __future__ import annotations

from loaderdoctor.analysis.impact import impact
from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _pct, _train_loader
from loaderdoctor.analysis.rules.weigh import impact_of


def _workers(r: dict) -> dict:
    return (r.get("data") or {}).get("workers") or {}


def rule_iterable_duplicates(r: dict) -> list[Finding]:
    w = _workers(r)
    dup = w.get("duplicates")
    ds = (r.get("data") or {}).get("dataset") or {}
    if not dup or ds.get("iterable") is False:
        return []
    ids = ", ".join(str(x) for x in dup["workers"]) or "several"
    per = w.get("epoch_samples") or []
    zero = w.get("epoch_samples_workers0") or []
    counts = ""
    if per:
        counts = f" Each epoch delivered {per[0]:,} samples with {dup['of']} workers"
        counts += f" against {zero[0]:,} with num_workers=0." if zero else "."
    ev = (f"The first {dup['batches_compared']} batches of workers {ids} ({len(dup['pids'])} of the {dup['of']} "
          f"workers of iterator {dup['iterator'] + 1}) were identical (digest {dup['digest']}): every worker runs "
          f"the dataset's whole __iter__, so each sample comes once per worker.{counts}")
    fix = ("Shard the stream by worker in __iter__: `info = torch.utils.data.get_worker_info()`; when it is not None, "
           "yield only items `info.id, info.id + info.num_workers, ...` (or split the list of files/shards with "
           "`files[info.id::info.num_workers]`). Each sample then comes once per epoch, as with num_workers=0.")
    share = 1 - 1 / dup["of"] if dup["of"] else None
    return [Finding("iterable-duplicates", "critical",
                    f"Every worker yields the same IterableDataset stream ({dup['of']}x duplicated samples)", ev, fix,
                    impact=impact_of(share, r) if share else None)]


def rule_idle_workers(r: dict) -> list[Finding]:
    idle = _workers(r).get("idle")
    if not idle:
        return []
    nw, k = idle["workers"], len(idle["idle"])
    active = nw - k
    ds = (r.get("data") or {}).get("dataset") or {}
    how = (f" {idle['ended_empty']} of them ended their stream at their first fetch." if idle.get("ended_empty") else "")
    ev = (f"In iterator {idle['iterator'] + 1}, {k} of {nw} workers (ids {', '.join(map(str, idle['idle']))}) "
          f"delivered no batch while worker(s) {', '.join(map(str, idle['active'])) or '-'} delivered "
          f"{idle.get('batches')} batches.{how}")
    if ds.get("iterable"):
        fix = (f"Match the shards to the workers: split the data into at least {nw} shards (a multiple of {nw}), or use "
               f"num_workers={max(1, active)} — the number of workers that had data. Which samples an epoch "
               "holds does not change.")
    else:
        fix = (f"Use num_workers={max(1, active)} (the workers that had work), or give each worker work: more, "
               "smaller batches per epoch.")
    wait = (r.get("baseline") or {}).get("data_wait_fraction")
    share = wait * k / nw if wait is not None else None
    return [Finding("idle-workers", "warning", f"{k} of {nw} workers deliver nothing", ev, fix,
                    impact=impact_of(share, r) if share else None)]


def rule_slow_worker(r: dict) -> list[Finding]:
    s = _workers(r).get("slow")
    if not s or s.get("ratio") is None:
        return []
    if s["ratio"] < THRESHOLDS["slow_worker_ratio"] or s["median_ms"] - s["others_ms"] < THRESHOLDS["slow_worker_min_ms"]:
        return []
    loader = _train_loader(r) or {}
    in_order = ((r.get("data") or {}).get("dataset") or {}).get("in_order") or {}
    table = ", ".join(f"worker {x['w']}: {x['median_ms']:.1f} ms ({x['fetches']} fetches)" for x in s["per_worker"])
    share = s.get("wait_share")
    ev = (f"Median fetch per worker: {table}. Worker {s['worker']} (pid {s['pid']}) takes {s['ratio']:.1f}x the "
          f"others' {s['others_ms']:.1f} ms" + (f"; waiting for its batches took {_pct(share)} of the training "
                                                 "loop's time." if share is not None else "."))
    fix = (f"Find what makes worker {s['worker']} slow (its shard or files, a slower disk or remote path, a "
           "worker_init_fn that set it up differently) and even it out.")
    if in_order.get("supported") and in_order.get("value") is not False and loader.get("num_workers"):
        fix += (" Meanwhile DataLoader(..., in_order=False) lets the other workers' batches through while it is "
                "slow: every sample still comes once per epoch, only the order of batches within the epoch changes.")
    elif not in_order.get("supported"):
        fix += " (This torch's DataLoader has no in_order argument; torch >= 2.6 has in_order=False.)"
    # the wait on its batches spread over every step (a median step hides a wait every nth batch)
    return [Finding("slow-worker", "warning", f"Worker {s['worker']} fetches {s['ratio']:.1f}x slower than the others",
                    ev, fix, impact=impact(share, s.get("wait_ms_per_step")) if share else None)]
