"""`check` results for CI: JUnit XML and the GitHub step summary, safe for any user text.

The result dict is the one `loaderdoctor check` returns (exit_code, status, detail, seconds,
batches, steps, target, hang, crash, findings, stack_dir, stderr_path). Its text comes from
the user's process, so every string goes through loaderdoctor.textsafe: the XML always
parses (no control character, no lone surrogate), the summary holds no raw HTML, and the
console text (`format_result`) holds no escape sequence a terminal would interpret.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import TextIO

from loaderdoctor.errors import EXIT_OK as _OK
from loaderdoctor.render.checktext import format_result
from loaderdoctor.textsafe import clean, xml_text

__all__ = ["format_result", "render_step_summary", "write_junit"]


def write_junit(result: dict, stream: TextIO) -> None:
    """One <testsuite> with one <testcase> (and a <failure> unless healthy) to a text stream.

    The output is pure ASCII (other characters as &#...; references) under a UTF-8
    declaration, so it is valid whatever encoding the stream was opened with.
    """
    r = result
    failed = r["exit_code"] != _OK
    secs = f"{float(r.get('seconds') or 0):.3f}"
    suite = ET.Element("testsuite", name="loaderdoctor", tests="1", failures="1" if failed else "0", errors="0",
                       time=secs)
    case = ET.SubElement(suite, "testcase", classname="loaderdoctor.check",
                         name=xml_text(os.path.basename(str(r.get("target") or ""))), time=secs)
    if failed:
        text = xml_text(format_result(r))
        ET.SubElement(case, "failure", message=text.splitlines()[0] if text else "",
                      type="hang" if r.get("hang") else "crash").text = text
    stream.write("<?xml version='1.0' encoding='utf-8'?>\n")
    stream.write(ET.tostring(suite, encoding="us-ascii", xml_declaration=False).decode("ascii"))
    stream.write("\n")


def _md(s: str) -> str:
    """User text safe inside Markdown or HTML: no tag, no entity, no code span."""
    return clean(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "&#96;")


def render_step_summary(result: dict) -> str:
    """The Markdown appended to $GITHUB_STEP_SUMMARY: a heading with the verdict line and the
    rest of the text in a <pre> block (entities, unlike a code fence, are decoded there, so
    escaped user text reads as typed and no user text is ever raw HTML)."""
    head, _, rest = format_result(result).partition("\n")
    out = f"### {_md(head)}\n\n"
    if rest:
        out += f"<pre>\n{_md(rest)}\n</pre>\n\n"
    return out
