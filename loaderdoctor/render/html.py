"""report.html: one self-contained file (styles inline, plots as data URIs, no scripts
and no network requests). jinja2 with autoescape: everything shown is escaped."""

from __future__ import annotations

import base64
import os
from typing import TextIO

from jinja2 import Environment, FileSystemLoader, select_autoescape

from loaderdoctor.render import plots, ranks
from loaderdoctor.render.text import (
    VERDICT_TEXT,
    baseline_method,
    dist,
    frame_line,
    gpu_lines,
    ms,
    num,
    pct,
)

_ENV = Environment(loader=FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
                   autoescape=select_autoescape(default=True, default_for_string=True))
_ENV.filters.update(ms=ms, pct=pct, num=num, frame=frame_line, opt=lambda x: "" if x is None else x)
_ENV.globals.update(dist=dist)


def render(report: dict, out: TextIO, pngs: dict[str, bytes] | None = None) -> None:
    """`pngs`: the plots rendered already (plots.render_all of this report), else drawn here."""
    images = {name: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
              for name, png in (plots.render_all(report) if pngs is None else pngs).items()}
    out.write(_ENV.get_template("report.html.j2").render(
        r=report, images=images, verdict_text=VERDICT_TEXT.get(report.get("verdict"), ""),
        baseline_method=baseline_method(report), gpu_lines=gpu_lines(report), rank_headers=ranks.HEADERS, rank_rows=ranks.rows(report),
        rank_note=ranks.NOTE.format(rank=ranks.primary_rank(report))))
