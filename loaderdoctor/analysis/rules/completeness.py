"""probe-incomplete: an experiment stage failed for a reason of loaderdoctor's or a framework's,
not the user's data pipeline; say which stage, its error and what it kept from being measured,
so no conclusion is drawn from it ("the best measured" when nothing was measured)."""

from __future__ import annotations

from loaderdoctor.analysis.rules.common import Finding, _runs

_FAILED = ("crash", "hang", "failed")


def _prevented(name: str) -> str:
    if name == "loader-only":
        return "how fast the loader alone delivers batches (the sweep's reference)"
    if name.startswith("workers-"):
        return f"the num_workers sweep's point at {name.split('-')[1]} workers"
    if name.startswith("prefetch-"):
        return f"the trial of prefetch_factor={name.split('-')[1]}"
    if name == "transforms":
        return "the cost of each transform and the prefix bisection"
    if name.startswith("context-"):
        return f"whether the loader works under the {name.split('-', 1)[1]} start method"
    if name == "confirm":
        return "the confirmation of the recommended settings: they are not recommended"
    return "this stage's measurement"


def rule_probe_incomplete(r: dict) -> list[Finding]:
    stages = {s["name"]: s for s in r.get("stages") or []}
    if (stages.get("baseline") or {}).get("status") != "ok":
        return []  # the baseline's own failure is the finding; experiments after it were skipped
    runs = {row["stage"]: row for row in _runs(r).values()}
    out = []
    for name, st in stages.items():
        if name in ("baseline", "check", "script-form") or st.get("status") not in _FAILED:
            continue
        row = runs.get(name)
        if row is not None and (row.get("worker_failed") or row.get("reruns") or row.get("bootstrap_error")
                                or (row.get("pickle") or {}).get("path") or row.get("missing_main_attr")):
            continue  # a start method that fails in the workers is a finding of its own (fork/spawn-unsafe)
        if name == "confirm" and any(c.get("stage") == "confirm" for c in (r.get("hangs") or []) + (r.get("crashes") or [])):
            continue  # the real script failed with the new settings: the crash/hang finding says so
        out.append(Finding(
            "probe-incomplete", "warning", f"The {name} stage did not complete: its result is not used",
            f"Stage {name} ended in '{st['status']}': {st.get('detail') or 'no detail'}. The baseline run of the "
            f"same script was fine, so this is not evidence against your code; it kept loaderdoctor from "
            f"measuring {_prevented(name)}.",
            "Nothing to change in your script for this. Re-run the probe (`--stages` can repeat just this stage) "
            "and, if it fails again, report it with this stage's stderr.log (stages/" + name + "/ in the run "
            "folder)."))
    return out
