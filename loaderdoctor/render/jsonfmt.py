from __future__ import annotations

import json
from typing import TextIO


def render(report: dict, out: TextIO) -> None:
    json.dump(report, out, indent=1, default=str, allow_nan=False)
    out.write("\n")
