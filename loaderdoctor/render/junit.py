"""`loaderdoctor check`'s result for CI: JUnit XML and the GitHub step summary."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from loaderdoctor.errors import EXIT_OK
from loaderdoctor.render.checktext import format_result


def write_junit(r: dict, path: str) -> None:
    suite = ET.Element("testsuite", name="loaderdoctor", tests="1",
                       failures="0" if r["exit_code"] == EXIT_OK else "1", errors="0", time=f"{r['seconds']:.3f}")
    case = ET.SubElement(suite, "testcase", classname="loaderdoctor.check", name=os.path.basename(r["target"]),
                         time=f"{r['seconds']:.3f}")
    if r["exit_code"] != EXIT_OK:
        text = format_result(r)
        fail = ET.SubElement(case, "failure", message=text.splitlines()[0],
                             type="hang" if r.get("hang") else "crash")
        fail.text = text
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def append_step_summary(r: dict, path: str) -> None:
    text = format_result(r)
    head, _, rest = text.partition("\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"### {head}\n\n")
        if rest:
            f.write("```\n" + rest.replace("```", "'''") + "\n```\n\n")
