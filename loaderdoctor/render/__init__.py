"""Renderers: each takes the report dict and writes to a stream it is given."""

from __future__ import annotations

from typing import Callable, TextIO

Renderer = Callable[[dict, TextIO], None]


def get(fmt: str) -> Renderer:
    if fmt == "md":
        from loaderdoctor.render.markdown import render
    elif fmt == "json":
        from loaderdoctor.render.jsonfmt import render
    elif fmt == "html":
        from loaderdoctor.render.html import render
    else:
        raise ValueError(fmt)
    return render
