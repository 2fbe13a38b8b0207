"""The raw record of one probe run, and its JSON form (session.json in the run directory).

Raw means: the stages' events and outcomes as they were observed, before any analysis.
report.build_report() derives report.json from it; a saved session re-builds the report
without re-running anything.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field, fields

from loaderdoctor import __version__

SESSION_VERSION = 1
RUN_ID_ENV = "LOADERDOCTOR_RUN_ID"  # set the same on every node of a multi-node run


@dataclass
class Session:
    target: dict  # {path, kind, argv}
    options: dict
    environment: dict
    stages: list[dict] = field(default_factory=list)  # StageResult.to_dict() each
    skipped: list[dict] = field(default_factory=list)  # [{name, reason}]
    started: float = field(default_factory=time.time)
    ended: float | None = None
    interrupted: bool = False
    notes: dict = field(default_factory=dict)  # what the planner decided and why (sweep order, caps)
    tool: dict = field(default_factory=lambda: {"name": "loaderdoctor", "version": __version__})
    version: int = SESSION_VERSION
    # one run of a job: the parts that each node's loaderdoctor writes share it (report merge)
    run_id: str = field(default_factory=lambda: os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex)
    node: dict = field(default_factory=dict)  # distributed: {hostname, nproc_per_node, node_rank}

    def stage(self, name: str) -> dict | None:
        return next((s for s in self.stages if s["name"] == name), None)

    def to_dict(self) -> dict:
        """Its fields, not copied (a deep copy of a long probe's events costs ~0.1 s a call):
        callers read it or build a new tree from it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, default=str)

    @classmethod
    def from_dict(cls, data: dict) -> "Session":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def load(cls, path: str) -> "Session":
        with open(path) as f:
            return cls.from_dict(json.load(f))
