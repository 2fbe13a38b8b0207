"""`loaderdoctor report merge DIR... [--out DIR]`: read each node's report.json, join them
(analysis/merge.py), write the merged report.json/.md/.html."""

from __future__ import annotations

import json
import os

from loaderdoctor.analysis.merge import merge_reports
from loaderdoctor.errors import EXIT_USAGE, LoaderDoctorError
from loaderdoctor.render import get as get_renderer
from loaderdoctor.session import RUN_ID_ENV
from loaderdoctor.textsafe import clean_tree


def _load(d: str) -> dict:
    path = d if d.endswith(".json") else os.path.join(d, "report.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = clean_tree(json.load(f))
    except FileNotFoundError:
        raise LoaderDoctorError(f"{path}: no such file. Pass the run directories each node's `loaderdoctor probe "
                                "--out DIR` wrote.", EXIT_USAGE) from None
    except (OSError, ValueError) as exc:
        raise LoaderDoctorError(f"{path} is not a readable report.json ({exc}).", EXIT_USAGE) from None
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise LoaderDoctorError(f"{path} is not a loaderdoctor report.json (schema_version 1).", EXIT_USAGE)
    return data


def merge(dirs: list[str], out_dir: str) -> dict:
    if not dirs:
        raise LoaderDoctorError("`loaderdoctor report merge` needs the run directories of the nodes: "
                                "loaderdoctor report merge DIR... [--out DIR].", EXIT_USAGE)
    parts = [_load(d) for d in dirs]
    ids = {p.get("run_id") for p in parts}
    if len(ids) > 1:
        said = ", ".join(f"{d}: {p.get('run_id')}" for d, p in zip(dirs, parts))
        raise LoaderDoctorError(f"These reports belong to different runs ({said}). Set {RUN_ID_ENV} to the same "
                                "value on every node (a job id will do) before `loaderdoctor probe`, then merge "
                                "their parts.", EXIT_USAGE)
    report = merge_reports(parts, names=[os.path.abspath(d) for d in dirs])
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for fmt in ("json", "md", "html"):
        path = os.path.join(out_dir, f"report.{fmt}")
        with open(path, "w", encoding="utf-8") as f:
            get_renderer(fmt)(report, f)
        paths[fmt] = path
    return {"report": report, "paths": paths}
