"""textsafe.clean / clean_tree / xml_text, and the JUnit and step-summary renderers that use them."""

import io
import json
import os
import re
import time
import xml.etree.ElementTree as ET

import pytest

from loaderdoctor.render.junit import format_result, render_step_summary, write_junit
from loaderdoctor.textsafe import clean, clean_tree, xml_text

HOSTILE = [
    "\udcff",
    os.fsdecode(b"/data/bad\xff\xfename.jpg"),  # a non-UTF-8 file name as Python sees it
    "\x00",
    "nul\x00in the middle",
    "\x1b[31mred\x1b[0m",
    "\x1b]0;pwned\x07",
    "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\",
    "<script>alert(1)</script>",
    "emoji \U0001f600 and \u2603",
    "CJK \u4e2d\u6587\u6570\u636e\u96c6",
    "tqdm 10%|\u2588   |\r 20%|\u2588\u2588  |\r\n",
    "\x85 next-line, \x9b CSI, \x7f DEL, \u2028 LS, \u202e RLO",
    "\ufffe\uffff non-characters",
    "```fence``` & `code`",
    "\ud83d\ude00",  # a surrogate pair (from JSON with surrogatepass)
]
# What must never survive clean(): C0 but \n and \t, DEL, C1, lone surrogates and the rest.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069\ufffe\uffff]")
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@pytest.mark.parametrize("s", HOSTILE)
def test_clean_is_safe_and_idempotent(s):
    c = clean(s)
    assert not FORBIDDEN.search(c)
    c.encode("utf-8")  # the Markdown writer's UnicodeEncodeError
    assert clean(c) == c


def test_clean_exact_forms():
    assert clean("\udcff") == "\ufffd"
    assert clean("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert clean("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07"
    assert clean("a\x00b") == "a\\x00b"
    assert clean("a\r\nb\r\n") == "a\nb\n"
    assert clean("a\rb") == "a\\x0db"
    assert clean("keep\ttabs\nand lines") == "keep\ttabs\nand lines"
    assert clean("\ud83d\ude00") == "\U0001f600"  # a valid pair joins
    assert clean("\ud83d") == "\ufffd"
    assert clean("\u202eevil") == "\\u202eevil"
    for s in ("emoji \U0001f600", "CJK \u4e2d\u6587", "<script>alert(1)</script>", "caf\u00e9"):
        assert clean(s) == s  # ordinary text, HTML included, is left to the renderers
    assert clean(None) == ""
    assert clean(b"bytes \xff") == "bytes \ufffd"
    assert clean(42) == "42"


def test_clean_tree_cleans_keys_and_values_and_copies():
    tree = {"msg\x1b": ["\udcff", ("t\x00", 1), {"k": None, "n": 1.5, "b": True}], 3: "x\x07"}
    out = clean_tree(tree)
    assert out == {"msg\\x1b": ["\ufffd", ("t\\x00", 1), {"k": None, "n": 1.5, "b": True}], 3: "x\\x07"}
    assert isinstance(out["msg\\x1b"][1], tuple)
    assert tree["msg\x1b"][0] == "\udcff"  # the input is not changed
    json.dumps(out, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("s", HOSTILE)
def test_xml_text_is_xml_legal(s):
    x = xml_text(s)
    assert not XML_ILLEGAL.search(x)
    el = ET.Element("t", attr=x)
    el.text = x
    back = ET.fromstring(ET.tostring(el, encoding="unicode"))
    assert back.text == x


def _tree(n: int) -> list[dict]:
    return [{"stage": "baseline", "pid": i, "message": f"ValueError: bad sample {i} \x1b[31m{'x' * 40}\x1b[0m",
             "frames": [{"function": "__getitem__", "file": f"/data/f\udcff{i}.py", "line": i}] * 2}
            for i in range(n)]


def _best_of(fn, arg, n: int = 3) -> float:
    import gc

    best = float("inf")
    for _ in range(n):
        gc.collect()
        gc.disable()  # the heap a long test session built up is not the function's cost
        try:
            t0 = time.perf_counter()
            fn(arg)
            best = min(best, time.perf_counter() - t0)
        finally:
            gc.enable()
    return best


def test_clean_tree_is_linear_on_a_2mb_tree():
    """Cleaning a 2.4 MB report tree: correct, and ten times the rows cost about ten times the
    time, not a hundred (a ratio: absolute figures belong to benchmarks/)."""
    big, small = _tree(8000), _tree(800)
    assert len(json.dumps(big).encode()) > 2_000_000
    out = clean_tree(big)
    assert out[5]["message"].startswith("ValueError: bad sample 5 \\x1b[31m")
    assert out[5]["frames"][0]["file"] == clean_tree(big[5]["frames"][0]["file"])
    ratio = _best_of(clean_tree, big) / _best_of(clean_tree, small)
    assert ratio < 30, f"10x the rows took {ratio:.1f}x the time"


def _crash_result(msg: str, target: str = "train.py") -> dict:
    return {"exit_code": 4, "status": "crash", "detail": f"ValueError: {msg}", "seconds": 1.5, "batches": 3,
            "steps": 20, "target": f"/work/{target}", "hang": None,
            "crash": {"stage": "check", "role": "worker", "signal": None, "exit_code": 1,
                      "exception_type": "ValueError", "message": msg,
                      "culprit": {"function": "__getitem__", "file": f"/work/{msg}.py", "line": 7}},
            "findings": [{"id": "worker-crash", "severity": "critical", "evidence": f"worker raised {msg}",
                          "fix": "fix it"}],
            "stack_dir": "/tmp/stacks", "stderr_path": "/tmp/stderr.log"}


def _hang_result(msg: str) -> dict:
    frames = [{"function": f"wait{msg}", "file": f"/work/{msg}.py", "line": i} for i in range(12)]
    return {"exit_code": 3, "status": "hang", "detail": "no progress for 5.0 s", "seconds": 5.2, "batches": 0,
            "steps": 20, "target": f"/work/{msg}.py",
            "hang": {"method": "faulthandler", "py_spy_not_used": msg,
                     "processes": [{"pid": 12, "role": "worker", "frames": frames}],
                     "culprit": dict(frames[0], role="worker", pid=12)},
            "crash": None, "findings": [], "stack_dir": "/tmp/stacks", "stderr_path": "/tmp/stderr.log"}


@pytest.mark.parametrize("s", HOSTILE)
def test_junit_parses_for_hostile_text(s):
    for r in (_crash_result(s, target=f"t{s}.py"), _hang_result(s)):
        buf = io.StringIO()
        write_junit(r, buf)
        xml = buf.getvalue()
        xml.encode("ascii")  # valid whatever the stream's encoding
        suite = ET.fromstring(xml.encode())
        assert suite.tag == "testsuite" and suite.get("failures") == "1" and suite.get("tests") == "1"
        (case,) = suite.findall("testcase")
        assert case.get("classname") == "loaderdoctor.check"
        fail = case.find("failure")
        assert fail.get("type") == ("hang" if r["hang"] else "crash")
        assert fail.text.startswith(fail.get("message"))
        assert "\x1b" not in fail.text and not XML_ILLEGAL.search(fail.text)


def test_junit_healthy_has_no_failure_and_keeps_text():
    r = {"exit_code": 0, "status": "ok", "detail": "stopped after the measured steps", "seconds": 2.0,
         "batches": 20, "steps": 20, "target": "/w/\u4e2d\u6587.py", "hang": None, "crash": None, "findings": []}
    buf = io.StringIO()
    write_junit(r, buf)
    suite = ET.fromstring(buf.getvalue().encode())
    assert suite.get("failures") == "0" and suite.get("time") == "2.000"
    assert suite.find("testcase").get("name") == "\u4e2d\u6587.py" and suite.find("testcase/failure") is None


def test_crash_text_reads_as_typed():
    r = _crash_result("\x1b[31mboom\x1b[0m <b>")
    text = format_result(r)
    assert "\x1b" not in text and "\\x1b[31mboom\\x1b[0m <b>" in text
    assert text.splitlines()[0].startswith("loaderdoctor check: CRASH. The worker process failed: ValueError:")
    fail = ET.fromstring(_junit(r).encode()).find("testcase/failure")
    assert "<b>" in fail.text  # escaped in the XML, restored by the parser


def _junit(r: dict) -> str:
    buf = io.StringIO()
    write_junit(r, buf)
    return buf.getvalue()


@pytest.mark.parametrize("s", HOSTILE)
def test_step_summary_has_no_raw_html_or_escapes(s):
    for r in (_crash_result(s), _hang_result(s)):
        md = render_step_summary(r)
        md.encode("utf-8")
        assert "<script>" not in md and "\x1b" not in md and not FORBIDDEN.search(md)
        body = md.split("<pre>\n", 1)[1].rsplit("\n</pre>", 1)[0]
        assert "<" not in body and ">" not in body and "`" not in body  # only our own <pre> is HTML


def test_step_summary_shape():
    md = render_step_summary(_crash_result("<script>alert(1)</script>"))
    assert md.startswith("### loaderdoctor check: CRASH.")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert md.rstrip().endswith("</pre>")
    ok = {"exit_code": 0, "detail": "done", "seconds": 1.0, "batches": 5, "target": "t.py"}
    assert render_step_summary(ok) == "### loaderdoctor check: healthy. 5 batches in 1.0 s, no hang, no crash (done).\n\n"


def test_random_mixes_stay_safe_and_idempotent():
    import random

    rng = random.Random(0)
    alphabet = ("\x00\x07\x08\t\n\r\x1b[]0;m\x7f\x85\x9b\u2028\u202e\u2066\ufffe\uffff\ud800\udbff\udc00\udfff"
                "\ud83d\ude00\\xu<>&`aZ \u4e2d\U0001f600")
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        c = clean(s)
        assert clean(c) == c and not FORBIDDEN.search(c)
        assert not XML_ILLEGAL.search(xml_text(s))
