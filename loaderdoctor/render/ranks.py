"""The ranks table of a distributed run (report.json `ranks`), for Markdown and HTML."""

from __future__ import annotations

from typing import TextIO

from loaderdoctor.render.mdtable import _cell, _table
from loaderdoctor.render.text import ms, num, pct

HEADERS = ["rank", "host", "steps", "samples/s", "data wait share", "wait median", "compute median",
           "in collectives", "step median", "batches per epoch"]
NOTE = ("Per rank, its training loader as the hooks saw it: data wait per batch, compute between batches "
        "(forward, backward and the gradient all-reduce, optimizer), and the time it waited in collectives, "
        "read as its backward time above the fastest rank's (DDP all-reduces gradients inside backward). "
        "The baseline above is rank {rank}'s view.")


def rows(r: dict) -> list[list]:
    out = []
    for x in r.get("ranks") or []:
        epochs = x.get("epoch_batches") or []
        per_epoch = (str(epochs[0]) + (" (measured)" if epochs else "")) if epochs else (
            f"{x['loader_batches']} (len(loader))" if x.get("loader_batches") else "n/a")
        rank = x.get("rank") if x.get("part") is None else f"{x.get('rank')} (part {x['part']})"
        out.append([rank, x.get("host"), x.get("steps"), num(x.get("samples_per_s")), pct(x.get("data_wait_fraction")),
                    ms(x.get("wait_s")), ms(x.get("compute_s")), ms(x.get("collective_s")), ms(x.get("step_s")),
                    per_epoch])
    return out


def primary_rank(r: dict) -> int:
    return next((x["rank"] for x in r.get("ranks") or [] if x.get("primary")), 0)


def markdown_section(r: dict, out: TextIO) -> None:
    if not r.get("ranks"):
        return
    out.write("## Ranks\n\n")
    _table(out, HEADERS, rows(r))
    out.write(_cell(NOTE.format(rank=primary_rank(r))) + "\n\n")
