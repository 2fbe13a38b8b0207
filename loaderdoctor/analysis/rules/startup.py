"""Start-up, divided in two (docs/findings-data.md):

- epoch-restart: the recurrence. Workers started again for every epoch (persistent_workers
  False, or the DataLoader built again each epoch): the waits at the first batch of every
  epoch after the first, summed, as a share of those epochs' time. Fixed by keeping the
  workers (persistent_workers=True, one DataLoader).
- worker-startup: the one start-up every run pays (the first iterator's first batch), when it
  is long by itself: at least worker_startup_min_s and worker_startup_share of the first epoch.
  Fixed by making the start-up cheaper (worker_init_fn, what the workers receive). Not made
  when epoch-restart is: the recurring finding tells that story."""

from __future__ import annotations

from loaderdoctor.analysis.impact import impact
from loaderdoctor.analysis.rules.common import THRESHOLDS, Finding, _pct, _train_loader
from loaderdoctor.analysis.rules.throughput import _confirm_text


def _restart(r: dict) -> dict | None:
    """The epochs block when start-up recurs per epoch above the threshold."""
    e = (r.get("data") or {}).get("epochs") or {}
    loader = _train_loader(r) or {}
    share = e.get("restart_share")
    if share is None or e.get("later", 0) < 1 or not loader.get("num_workers"):
        return None
    if loader.get("persistent_workers") and (loader.get("instances") or 1) <= 1:
        return None  # the same workers serve every epoch: a later first batch is a refill, not a restart
    return e if share >= THRESHOLDS["epoch_restart_share"] else None


def rule_epoch_restart(r: dict) -> list[Finding]:
    e = _restart(r)
    if e is None:
        return []
    loader = _train_loader(r) or {}
    share = e["restart_share"]
    waits = ", ".join(f"{x:.2f} s" for x in e["later_startup_s"][:6])
    rebuilt = (loader.get("instances") or 1) > 1
    ev = (f"{e['iterators']} epochs of the training loader were measured; each epoch after the first waited for its "
          f"first batch ({waits}; {e['restart_s_per_epoch']:.2f} s on average) while its workers started again "
          f"(num_workers={loader.get('num_workers')}, persistent_workers={loader.get('persistent_workers')}"
          f"{', the DataLoader built again each epoch' if rebuilt else ''}). Summed, that is {_pct(share)} of those "
          f"epochs' time ({e['epoch_s']:.2f} s per epoch of ~{e['later_batches']:.0f} batches).{_confirm_text(r)}")
    if rebuilt:
        fix = (f"The training DataLoader is built again for every epoch (construction site {loader.get('site')}); "
               "build it once, before the epoch loop, with persistent_workers=True: the workers then start once.")
    else:
        fix = ("Pass persistent_workers=True to the training DataLoader: its workers (and what their worker_init_fn "
               "set up) survive between epochs. The samples and their order per epoch are unchanged.")
    # the restart spread over its epoch's steps (the median step leaves every first batch out)
    per_step = 1000 * e["restart_s_per_epoch"] / e["later_batches"] if e.get("later_batches") else None
    return [Finding("epoch-restart", "warning", f"Restarting the workers every epoch takes {_pct(share)} of each epoch",
                    ev, fix, impact=impact(share, per_step))]


def rule_worker_startup(r: dict) -> list[Finding]:
    b = r.get("baseline") or {}
    e = (r.get("data") or {}).get("epochs") or {}
    loader = _train_loader(r) or {}
    first = e.get("first_startup_s", b.get("first_batch_s"))
    step = (b.get("step_s") or {}).get("median")
    n, bs = loader.get("dataset_len"), loader.get("batch_size") or 1
    if first is None or not step or not n or _restart(r) is not None or not loader.get("num_workers"):
        return []
    epoch = -(-n // bs) * step
    share = first / (first + epoch)
    if first < THRESHOLDS["worker_startup_min_s"] or share < THRESHOLDS["worker_startup_share"]:
        return []
    init = loader.get("worker_init_fn")
    method = loader.get("start_method")
    ev = (f"The training loader's first batch arrived {first:.2f} s after its iterator started (num_workers="
          f"{loader.get('num_workers')}, start method {method}{', worker_init_fn ' + init if init else ''}): "
          f"{_pct(share)} of the first epoch ({-(-n // bs)} batches x {1000 * step:.1f} ms median step). "
          "It is paid once per run.")
    fix = "Make the workers' start cheaper: "
    parts = []
    if init:
        parts.append(f"move the slow part of {init} to before the DataLoader (shared by fork) or do it lazily")
    if method in ("spawn", "forkserver"):
        parts.append("every worker receives a pickled copy of the dataset under " + method
                     + ": keep large in-memory data out of it (paths, or a file the workers map)")
    if not init and method not in ("spawn", "forkserver"):
        parts.append("the wait is the first fetch itself: move lazy set-up in __getitem__/__iter__ (opening files, "
                     "loading an index) to the dataset's __init__ so forked workers inherit it")
    parts.append("fewer workers start faster when the loader does not need them all")
    return [Finding("worker-startup", "info", f"Starting the loader's workers takes {first:.1f} s",
                    ev, fix + "; ".join(parts) + ".")]
