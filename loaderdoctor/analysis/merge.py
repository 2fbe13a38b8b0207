"""Pure: the per-node reports of one multi-node run -> one report.

Each node's loaderdoctor probes its own ranks and writes a part under the run's id
(session.run_id: $LOADERDOCTOR_RUN_ID, the same on every node). The merged report keeps the
first part's single-process blocks (baseline, loaders, sweep, ...: its rank-0 view), and
joins what is per rank: `ranks` concatenated (each row with its part and host), `hangs` and
`crashes` joined (each with its part), `stages` joined. The collective wait is re-read across
every rank of the job (the fastest backward of all nodes), then the verdict, the findings and
the recommendation are recomputed from the joined report by the same rules.
"""

from __future__ import annotations

import copy

from loaderdoctor.analysis import rules as diagnose
from loaderdoctor.analysis.ranks import fill_collective
from loaderdoctor.analysis.report import _candidate


def _tag(items: list[dict], part: int, host: str | None) -> list[dict]:
    return [{**x, "part": part, "node_host": x.get("host") or host} for x in items or []]


def merge_reports(parts: list[dict], names: list[str] | None = None) -> dict:
    if not parts:
        raise ValueError("nothing to merge")
    names = names or [str(k) for k in range(len(parts))]
    r = copy.deepcopy(parts[0])
    r["ranks"], r["hangs"], r["crashes"], r["stages"] = [], [], [], []
    r["plots"] = []  # the parts' images stay in their own directories
    for k, part in enumerate(parts):
        host = (part.get("node") or {}).get("hostname")
        r["ranks"] += _tag(part.get("ranks"), k, host)
        r["hangs"] += _tag(part.get("hangs"), k, host)
        r["crashes"] += _tag(part.get("crashes"), k, host)
        r["stages"] += [{**s, "part": k} for s in part.get("stages") or []]
    for x in r["ranks"]:
        x["collective_s"] = x["own_s"] = None
        x["primary"] = x.get("primary") and x["part"] == 0
    fill_collective(r["ranks"])
    r["merged"] = {"run_id": r.get("run_id"), "parts": [
        {"part": k, "source": names[k], "node": part.get("node") or {}, "verdict": part.get("verdict"),
         "ranks": [x.get("rank") for x in part.get("ranks") or []]} for k, part in enumerate(parts)]}
    r["node"] = {"parts": len(parts), "hostnames": sorted({(p.get("node") or {}).get("hostname") or "?" for p in parts})}
    r["verdict"], r["findings"], r["recommendation"] = diagnose.diagnose(r, best=_candidate(r))
    return r
