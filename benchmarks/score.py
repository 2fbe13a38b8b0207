"""Run `loaderdoctor probe` on every scenario in benchmarks/scenarios/ and score the
diagnosis against expected.json. Prints a table and, last, `score: K/N`.

    python benchmarks/score.py [--fast] [--only a.py,b.py]

--fast runs only the stages that decide each expectation. A scenario whose requirement is
missing here (e.g. torchvision without LOADERDOCTOR_TV_PYTHON) is listed as skipped and not
counted. torchvision runs under LOADERDOCTOR_TV_PYTHON when that is set.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCEN = os.path.join(HERE, "scenarios")


def judge(exp: dict, report: dict) -> tuple[bool, str]:
    ids = [f["id"] for f in report["findings"]]
    why = []
    if report["verdict"] not in exp["verdict"]:
        why.append(f"verdict {report['verdict']}")
    missing = [i for i in exp.get("findings", []) if i not in ids]
    if missing:
        why.append(f"missing {','.join(missing)}")
    bad = [i for i in exp.get("forbid", []) if i in ids]
    if bad:
        why.append(f"unexpected {','.join(bad)}")
    if exp.get("control"):
        alarms = [f["id"] for f in report["findings"] if f["severity"] in ("warning", "critical")]
        if alarms:
            why.append(f"false alarm {','.join(alarms)}")
    return not why, "; ".join(why)


def python_for(needs: str | None) -> str | None:
    if needs == "torchvision":
        py = os.environ.get("LOADERDOCTOR_TV_PYTHON")
        if py and os.path.exists(py):
            return py
    if needs and importlib.util.find_spec(needs) is None:
        return None
    return sys.executable


def run(name: str, exp: dict, fast: bool) -> dict:
    py = python_for(exp.get("needs"))
    if py is None:
        return {"name": name, "status": "skipped", "why": f"needs {exp['needs']}"}
    with tempfile.TemporaryDirectory() as d:
        cmd = [py, "-m", "loaderdoctor", "probe", os.path.join(SCEN, name), "--out", d, "-q", "--steps", "20",
               *exp.get("args", [])]
        if fast:
            cmd += ["--stages", exp["fast_stages"]]
        t = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        took = time.monotonic() - t
        try:
            with open(os.path.join(d, "report.json")) as f:
                report = json.load(f)
        except (OSError, ValueError):
            return {"name": name, "status": "wrong", "why": f"no report (exit {res.returncode}): "
                                                            f"{res.stderr.strip()[-300:]}", "seconds": took}
    ok, why = judge(exp, report)
    return {"name": name, "status": "right" if ok else "wrong", "why": why, "seconds": took,
            "verdict": report["verdict"], "findings": [f["id"] for f in report["findings"]]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    with open(os.path.join(SCEN, "expected.json")) as f:
        expected = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    only = [x for x in args.only.split(",") if x]
    rows = [run(name, exp, args.fast) for name, exp in expected.items() if not only or name in only]
    print(f"{'scenario':28} {'expected':36} {'got':48} {'seconds':>7}  result")
    for r in rows:
        exp = expected[r["name"]]
        want = "/".join(exp["verdict"]) + (" " + ",".join(exp.get("findings", [])) if exp.get("findings") else "")
        got = (r.get("verdict", "") + " " + ",".join(r.get("findings", []))).strip() or r.get("why", "")
        secs = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        print(f"{r['name']:28} {want[:36]:36} {got[:48]:48} {secs:>7}  {r['status']}"
              + (f" ({r['why']})" if r["status"] != "right" and r.get("why") else ""))
    counted = [r for r in rows if r["status"] != "skipped"]
    print(f"score: {sum(r['status'] == 'right' for r in counted)}/{len(counted)}")


if __name__ == "__main__":
    main()
