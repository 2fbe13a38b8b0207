"""What the runner child and the parent agree on: environment names and event shapes.

Events are JSON objects, one per line, written with a single os.write (atomic below
PIPE_BUF) on an inherited pipe. Kinds (key "e"):

  hello   runner started: pid, python, torch, start_method_default, torch_import_s
  loader  a DataLoader was constructed: l (site index), site, config{...}
  it      an iterator started: l, workers[pids], start_method, threads[names], cuda_init
  b       a batch arrived: l, i (batch index in this iterator), w (wait s),
          c (compute s of the previous batch, or null), n (samples), s (start-up s, first only)
  end     an iterator stopped: l, c (compute of its last batch), why: epoch|stop
  stop    the runner is stopping the script: why: steps|time
  exit    the script is over: how: finished|stopped|sysexit|exception, code, exc{...}
"""

from __future__ import annotations

import json

EVENT_FD_ENV = "LOADERDOCTOR_EVENT_FD"
RUN_ID_ENV = "LOADERDOCTOR_RUN"


def decode(line: bytes | str) -> dict | None:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) and "e" in obj else None
