"""Markdown cells, tables and fences: user text escaped so it cannot break the table or the page."""

from __future__ import annotations

from typing import TextIO


def _cell(x) -> str:
    s = "" if x is None else str(x)
    return s.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _table(out: TextIO, headers: list[str], rows: list[list]) -> None:
    out.write("| " + " | ".join(headers) + " |\n")
    out.write("|" + "---|" * len(headers) + "\n")
    for row in rows:
        out.write("| " + " | ".join(_cell(c) for c in row) + " |\n")
    out.write("\n")


def _fence(text: str) -> str:
    return "```\n" + text.replace("```", "`\u200b``") + "\n```\n"
