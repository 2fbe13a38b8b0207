"""What the runner child and the parent agree on: environment names and event shapes.

Events are JSON objects, one per line, written with a single os.write (atomic below
PIPE_BUF) on an inherited pipe. Kinds (key "e"):

  hello   the script imported torch and the hooks are in: pid, python, torch, cuda_built,
          start_method_default, torch_import_s, preloaded (a warm start had torch loaded),
          before_torch{env[names the script changed], extensions[native modules it loaded]}
          (a script that never imports torch: sent before "exit", torch_import_s null)
  import  a lazily loaded part of torch was first imported (child/torchhook.PRELOADABLE): m (its
          name), s (seconds), before{env, extensions} as in hello (null: a warm start had it loaded)
  env     just before hello or import, when the script had changed environment variables before
          that import: m, values{name: value or null}. Kept in the parent's memory for a warm
          start (orchestrate/warmstart.py), never stored or written: values may be secrets
  loader  a DataLoader was constructed: l (loader index), site (its identity across stages: where
          it was built, through which library functions, and the ordinal of its dataset there),
          built_at (the user's frames), via (the library functions), config{...}
  it      an iterator started: l, workers[pids], start_method, threads[names], cuda_init
  b       a batch arrived: l, i (batch index in this iterator), w (wait s),
          c (compute s of the previous batch, or null), n (samples), s (start-up s, first only),
          t (arrival, s since the recorder started), g: 0 when drawn with gradients disabled
  o       an optimizer step ended: l (loader of the last batch drawn before it), t (s since the
          recorder started), f (from the previous step's end to the model's first forward, or null),
          k (distributed runs: seconds inside backward since the previous step, all-reduce included)
  end     an iterator stopped: l, c (compute of its last batch), why: epoch|stop
  stop    the runner is stopping the script: why: steps|time
  exit    the script is over: how: finished|stopped|sysexit|exception, code, exc{...}
  ds      a loader's dataset, once at its first iterator: iterable, containers[...], in_order{...}
  wf wx wh  written by the DataLoader workers themselves (child/workerevents.py): a fetch, an
          IterableDataset stream that ended, a digest of one of a worker's first batches
  cache_whatif  the transforms stage's deterministic prefix and its cached rate (child/cacheprefix.py)

  launch  distributed stages: torch's launcher is about to start the ranks: pid, nproc

In a distributed stage (child/distlaunch.py) every event carries "rank" (the global rank that
wrote it), and hello also local_rank, world_size, node_rank, restart and host.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

DEFAULT_STEPS = 50  # measured training steps per stage
DEFAULT_WARMUP = 3  # batches left out after an iterator's first

EVENT_FD_ENV = "LOADERDOCTOR_EVENT_FD"
RUN_ID_ENV = "LOADERDOCTOR_RUN"
ARGV_ENV = "LOADERDOCTOR_ARGV"  # the script's real arguments (spec.json has them redacted)
PARENT_PID_ENV = "LOADERDOCTOR_PARENT"  # the runner dies with this process
EVENT_DIR_ENV = "LOADERDOCTOR_EVENT_DIR"  # distributed stages: each local rank's FIFO is here


def decode(line: bytes | str) -> dict | None:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) and "e" in obj else None


@dataclass
class RunnerSpec:
    """What the parent tells one runner child (written as spec.json, read by the child).
    The one typed shape both sides use; paths are absolute."""

    target: str
    stage_dir: str
    stack_dir: str | None = None
    argv: list[str] = field(default_factory=list)
    kind: str = "script"  # script | notebook
    steps: int = DEFAULT_STEPS
    warmup: int = DEFAULT_WARMUP
    max_seconds: float | None = None
    overrides: dict = field(default_factory=dict)
    override_site: str | None = None
    mode: str = "train"  # train | drain | transforms
    target_site: str | None = None
    drain_seconds: float | None = None
    copy_to: str | None = None  # drain: each batch copied to this device, non_blocking (the pin-memory stage)
    event_fifo: str | None = None  # notebooks: the kernel writes its events here

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(asdict(self), f)

    @classmethod
    def load(cls, path: str) -> "RunnerSpec":
        with open(path) as f:
            data = json.load(f)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def loader_warmup(config: dict | None, base: int) -> int:
    """The warm-up rule. Batches to leave out after an iterator's first: at least the batches
    the workers prefetch while the first one is awaited (num_workers x prefetch_factor),
    which then arrive at once and would inflate the rate."""
    cfg = config or {}
    nw = cfg.get("num_workers") or 0
    return max(base, nw * (cfg.get("prefetch_factor") or 2)) if nw else base
