"""One stage = one runner child, observed by the parent until it ends.

The parent reads the runner's events on a pipe (a reader thread), applies the watchdog
(no event for `timeout` seconds, or `first_batch_timeout` while an iterator waits for its
first batch, is a hang), captures stacks on a hang, and always ends the whole process
tree. What happened is returned raw as a StageResult; nothing here interprets numbers.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable

from loaderdoctor.analysis import crash
from loaderdoctor.frames import parse_faulthandler
from loaderdoctor.observe import envinfo, procs
from loaderdoctor.observe.sampling import TreeSampler
from loaderdoctor.orchestrate import distwatch, hangwatch, logcap
from loaderdoctor.protocol import (
    ARGV_ENV,
    DEFAULT_STEPS,
    DEFAULT_WARMUP,
    EVENT_FD_ENV,
    PARENT_PID_ENV,
    RUN_ID_ENV,
    RunnerSpec,
    decode,
)


@dataclass
class StageSpec:
    name: str
    target: str
    argv: list[str] = field(default_factory=list)  # what the script gets (secrets included: never written)
    recorded_argv: list[str] | None = None  # what spec.json says (secrets as ***); default: argv
    steps: int = DEFAULT_STEPS
    warmup: int = DEFAULT_WARMUP
    timeout: float = 60.0
    first_batch_timeout: float | None = None  # default: 2 x timeout
    max_seconds: float | None = None  # the runner stops the script after this long
    overrides: dict = field(default_factory=dict)
    override_site: str | None = None
    stack_method: str = "auto"  # auto | py-spy | faulthandler
    cwd: str | None = None
    env: dict = field(default_factory=dict)
    kind: str = "script"  # script | notebook (run in a Jupyter kernel)
    sample_interval: float | None = 0.2  # psutil/NVML sampling of the run's processes; None: off
    mode: str = "train"  # train | drain | transforms (see hooks.Recorder)
    target_site: str | None = None  # the loader a drain/transforms stage drives
    drain_seconds: float | None = None
    copy_to: str | None = None  # drain: copy each batch to this device (the pin-memory stage)
    hang_culprit: dict | None = None  # {file, line}: the baseline hung there; the same stall here is a hang at once
    nproc_per_node: int | None = None  # run as torchrun would, every rank hooked (child/distlaunch.py)


@dataclass
class StageResult:
    name: str
    status: str  # ok | hang | crash | failed | skipped | interrupted
    seconds: float
    detail: str = ""
    events: list[dict] = field(default_factory=list)
    exit: dict | None = None  # the runner's exit event
    returncode: int | None = None
    hang: dict | None = None
    stderr_tail: str = ""
    stdout_path: str | None = None
    stderr_path: str | None = None
    stack_dir: str | None = None
    survivors: list[int] = field(default_factory=list)
    fatal_dumps: list[dict] = field(default_factory=list)  # [{pid, role, error, frames}]
    samples: dict | None = None  # TreeSampler.summary()
    window: list[float] | None = None  # first and last batch, on the sampler's clock
    oom_kills: dict = field(default_factory=dict)  # kernel OOM-kill counters that rose: {source: increase}
    started: float | None = None  # wall clock (time.time()) at the stage's start
    reruns: list[dict] = field(default_factory=list)  # workers caught re-running the script (mpmain)
    log_cuts: dict = field(default_factory=dict)  # {log name: {cut_bytes}}: logs kept to head and tail
    rank: int | None = None  # distributed: the rank whose events `events` holds (distwatch.settle)
    rank_events: dict = field(default_factory=dict)  # distributed: {rank: events} of the other ranks
    warm: bool = False  # forked from the warm process (torch imported already), not started cold
    private_env: dict = field(default_factory=dict, repr=False)  # "env" events' values: never recorded

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("private_env")
        return out

    @property
    def batches(self) -> int:
        return sum(1 for e in self.events if e.get("e") == "b")


class _Reader(threading.Thread):
    def __init__(self, fd: int, on_event: Callable[[dict], None]):
        super().__init__(name="loaderdoctor-events", daemon=True)
        self.fd = fd
        self.on_event = on_event

    def run(self) -> None:
        with os.fdopen(self.fd, "rb") as f:
            for line in f:
                ev = decode(line)
                if ev is not None:
                    self.on_event(ev)


def _tail(path: str, limit: int = 8000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class _Watch:
    """What the parent knows of a running stage, updated by the event reader thread."""

    def __init__(self, clock: Callable[[], float], on_event: Callable[[dict], None] | None):
        self.clock = clock
        self.on_event = on_event
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.last = clock()
        self.waiting_first = True
        self.stop_at: float | None = None
        self.exit: dict | None = None
        self.workers: set[int] = set()
        self.main_pid: int | None = None
        self.b_first: float | None = None
        self.b_last: float | None = None
        self.checked_at = float("-inf")  # last early-hang stack check
        self.same_stall = False
        self.worker_death_at: float | None = None  # when a dead DataLoader worker was first seen
        self.private_env: dict[str, dict] = {}  # "env" events: {module: {name: value}}

    def handle(self, ev: dict) -> None:
        now = self.clock()
        kind = ev.get("e")
        if kind == "env":  # values the script set (maybe secrets): kept here for a warm start, never recorded
            self.private_env[str(ev.get("m"))] = dict(ev.get("values") or {})
            return
        with self.lock:
            self.events.append(ev)
            self.last = now
            if kind == "hello":
                self.main_pid = ev.get("pid")
            elif kind == "it":
                self.waiting_first = True
                self.workers.update(p for p in ev.get("workers") or [] if p)
            elif kind == "b":
                self.waiting_first = False
                self.b_first = self.b_first or now
                self.b_last = now
            elif kind == "stop":
                self.stop_at = now
            elif kind == "exit" and self.exit is None:  # the first word on how it ended is the one
                self.exit = ev
        if self.on_event is not None:
            self.on_event(ev)


def hold_interrupts() -> None:
    """Ignore further Ctrl-C and SIGTERM: the run is being ended and what was measured written
    (bounded: every wait there has a timeout). The process exits right after."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):  # not the main thread
            pass


STOP_GRACE_S = 2.0
LOG_HEAD = LOG_TAIL = 1_000_000  # bytes of a stage's stdout/stderr kept at each end; the middle is cut, and said  # a runner that said "stop" has this long to say "exit" before it is ended


def base_env() -> dict:
    """The environment every stage starts from (the stage's own `env` goes on top)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _start_child(spec: StageSpec, stage_dir: str, stack_dir: str, run_id: str, warm=None):
    """Write the runner's spec and start it in a session of its own; returns (process, read
    end of the event pipe). The runner dies with this process (PR_SET_PDEATHSIG, set by the
    runner itself, which also checks that its parent is still this process). With `warm`
    (orchestrate/warmstart.py) a plain script's stage is forked from the warm process (which
    dies with this one); if that fails the stage starts cold."""
    spec_path = os.path.join(stage_dir, "spec.json")
    RunnerSpec(
        target=os.path.abspath(spec.target), stage_dir=os.path.abspath(stage_dir), stack_dir=os.path.abspath(stack_dir),
        argv=list(spec.argv if spec.recorded_argv is None else spec.recorded_argv), kind=spec.kind, steps=spec.steps, warmup=spec.warmup, max_seconds=spec.max_seconds,
        overrides=spec.overrides, override_site=spec.override_site, mode=spec.mode, target_site=spec.target_site,
        drain_seconds=spec.drain_seconds, copy_to=spec.copy_to,
    ).save(spec_path)
    r, w = os.pipe()
    env = base_env()
    env.update(spec.env)
    env[EVENT_FD_ENV] = str(w)
    env[RUN_ID_ENV] = run_id
    env[ARGV_ENV] = json.dumps(list(spec.argv))  # the real arguments travel in memory, never on disk
    cwd = spec.cwd or os.getcwd()
    warm_ok = warm is not None and spec.kind == "script" and not spec.nproc_per_node and not spec.env
    cmd = (["loaderdoctor.child.distlaunch", str(spec.nproc_per_node)] if spec.nproc_per_node
           else ["loaderdoctor.child.runner"])
    proc = None
    with logcap.open_log(os.path.join(stage_dir, "stdout.log")) as out, \
            logcap.open_log(os.path.join(stage_dir, "stderr.log")) as err:
        if warm_ok:
            proc = warm.start(spec_path, {**env, PARENT_PID_ENV: str(warm.pid)}, cwd, w, out, err)
        if proc is None:
            env[PARENT_PID_ENV] = str(os.getpid())
            proc = subprocess.Popen(
                [sys.executable, "-m", *cmd, spec_path],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                cwd=cwd, pass_fds=(w,), start_new_session=True,
            )
    os.close(w)
    return proc, r


def _sampler(spec: StageSpec, proc: subprocess.Popen, watch: _Watch, gpus) -> TreeSampler | None:
    if not spec.sample_interval:
        return None

    def roles() -> dict[int, str]:
        with watch.lock:
            out = {pid: "worker" for pid in watch.workers}
            if watch.main_pid and watch.main_pid != proc.pid:  # a notebook's kernel
                out[watch.main_pid] = "main"
                out[proc.pid] = "runner"
            return out

    sampler = TreeSampler(proc.pid, roles, stage=spec.name, interval=spec.sample_interval, gpus=gpus)
    sampler.start()
    return sampler


def _watch_until_done(spec: StageSpec, proc: subprocess.Popen, watch: _Watch, run_id: str, stack_dir: str,
                      t_start: float, poll: float) -> tuple[str | None, str, dict | None]:
    """The watchdog loop: until the child exits, says it is done, or makes no progress for
    its allowance (then stacks are captured). Returns (status or None, detail, hang)."""
    clock = watch.clock
    timeout = spec.timeout
    first_timeout = spec.first_batch_timeout or 2 * timeout
    hard_limit = (spec.max_seconds or 0) + first_timeout + timeout + 30 if spec.max_seconds else None
    try:
        while proc.poll() is None:
            now = clock()
            with watch.lock:
                idle = now - watch.last
                allowance = first_timeout if watch.waiting_first else timeout
                stop_at, exited = watch.stop_at, watch.exit is not None
            if exited or (stop_at is not None and now - stop_at > STOP_GRACE_S):
                break  # the script is over or was told to stop: what is left gets ended
            if hangwatch.same_stall(spec, idle, now, watch):
                allowance = idle  # the baseline's culprit frame again: no need to wait out the timeout
            if idle >= allowance and hangwatch.awaiting_worker_death(watch, now):
                pass  # a worker died: torch raises its own error (which names it) within seconds
            elif idle >= allowance:
                with watch.lock:
                    workers, waiting_first = set(watch.workers), watch.waiting_first
                    mains = set(watch.mains) if spec.nproc_per_node else {watch.main_pid or proc.pid}
                hang = hangwatch.on_hang(proc.pid, run_id, workers, stack_dir, spec, idle, waiting_first, mains)
                if spec.nproc_per_node:  # every rank's processes, and the rank the others wait for
                    hang = watch.annotate_hang(hang, stack_dir)
                detail = (f"no progress for {idle:.1f} s (allowance {allowance:g} s"
                          f"{', waiting for a first batch' if waiting_first else ''})")
                if watch.same_stall:
                    c = spec.hang_culprit or {}
                    detail = (f"no progress for {idle:.1f} s, stuck in the baseline's hang ({c.get('function')} at "
                              f"{os.path.basename(c.get('file') or '?')}:{c.get('line')}): called a hang without "
                              "waiting out the timeout")
                return "hang", detail, hang
            if hard_limit is not None and now - t_start > hard_limit:
                return "failed", f"stage exceeded its time limit of {hard_limit:.0f} s", None
            time.sleep(poll)
    except KeyboardInterrupt:
        hold_interrupts()  # a second Ctrl-C must not cut short the ending of the tree and the partial report
        return "interrupted", "interrupted by the user (Ctrl-C or SIGTERM); the run was ended", None
    return None, "", None


def run_stage(spec: StageSpec, run_dir: str, *, on_event: Callable[[dict], None] | None = None,
              clock: Callable[[], float] = time.monotonic, poll: float = 0.05, gpus=None, warm=None) -> StageResult:
    """Run one stage to its end. The outcome is decided from the events received, never from
    how the child left; the whole process tree is always ended. On Ctrl-C the tree is ended
    and the result comes back with status "interrupted" and whatever was recorded."""
    stage_dir = os.path.join(run_dir, "stages", spec.name)
    stack_dir = os.path.join(stage_dir, "stacks")
    os.makedirs(stack_dir, exist_ok=True)
    run_id = uuid.uuid4().hex
    watch = distwatch.DistWatch(clock, on_event, spec.nproc_per_node) if spec.nproc_per_node else _Watch(clock, on_event)
    oom_before = envinfo.oom_kill_counters()
    started = time.time()
    t_start = clock()
    proc, r = _start_child(spec, stage_dir, stack_dir, run_id, warm)
    cappers = [logcap.LogCapper(os.path.join(stage_dir, name), LOG_HEAD, LOG_TAIL).start()
               for name in ("stdout.log", "stderr.log")]
    reader = _Reader(r, watch.handle)
    reader.start()
    sampler = _sampler(spec, proc, watch, gpus)
    status, detail, hang = None, "", None
    try:
        status, detail, hang = _watch_until_done(spec, proc, watch, run_id, stack_dir, t_start, poll)
    finally:
        if sampler is not None:
            sampler.stop()
        # A runner that said how it ended (not a stop: that one leaves by itself at once) gets a
        # moment to leave on its own; then the whole tree is ended.
        if status is None and watch.exit is not None and watch.exit.get("how") != "stopped":
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        survivors = procs.end_run(proc.pid, run_id, adopter=getattr(proc, "adopter", None))
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        reader.join(timeout=5)
        log_cuts = {os.path.basename(c.path): cut for c in cappers if (cut := c.stop())}
    result = StageResult(
        name=spec.name, status=status or "ok", seconds=round(clock() - t_start, 3), detail=detail,
        events=watch.events, exit=watch.exit, returncode=proc.returncode, hang=hang,
        stderr_tail=_tail(os.path.join(stage_dir, "stderr.log")), stdout_path=os.path.join(stage_dir, "stdout.log"),
        stderr_path=os.path.join(stage_dir, "stderr.log"), stack_dir=stack_dir, survivors=survivors,
        fatal_dumps=_fatal_dumps(stack_dir), oom_kills=_oom_rise(oom_before, envinfo.oom_kill_counters()),
        samples=sampler.summary() if sampler is not None else None,
        window=([round(watch.b_first - sampler.t0, 3), round(watch.b_last - sampler.t0, 3)]
                if sampler is not None and watch.b_first else None),
        started=started, reruns=_reruns(stage_dir), log_cuts=log_cuts, warm=not isinstance(proc, subprocess.Popen),
        private_env=getattr(watch, "private_env", {}),
    )
    if spec.nproc_per_node:
        distwatch.settle(result, watch)
    if status is None:
        _classify_end(result)
    return result


def _reruns(stage_dir: str) -> list[dict]:
    """What spawn/forkserver workers that re-ran the script's top level were caught doing
    (child/mpmain.py writes rerun-<pid>.json)."""
    out = []
    for path in sorted(glob.glob(os.path.join(stage_dir, "rerun-*.json"))):
        try:
            with open(path) as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue
    return out


def _fatal_dumps(stack_dir: str) -> list[dict]:
    """Fatal-signal dumps faulthandler left in the stack files (stacks/<role>-<pid>.txt)."""
    out = []
    for name in sorted(os.listdir(stack_dir)):
        role, _, rest = name.partition("-")
        if not name.endswith(".txt") or not rest[:-4].isdigit():
            continue
        try:
            with open(os.path.join(stack_dir, name), errors="replace") as f:
                dumps = parse_faulthandler(f.read())
        except OSError:
            continue
        for error, threads in dumps:
            if error:
                cur = next((t for t in threads if t.name == "current"), threads[0] if threads else None)
                out.append({"pid": int(rest[:-4]), "role": role, "error": error,
                            "frames": cur.frames if cur else []})
    return out


def _oom_rise(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The OOM-kill counters that rose during the stage, and by how much."""
    return {k: after[k] - before[k] for k in after if k in before and after[k] > before[k]}


def _classify_end(res: StageResult) -> None:
    """Status of a stage that ended by itself (no watchdog action)."""
    if res.reruns:  # never "ok": its workers ran the script's top level again
        rr = res.reruns[0]
        fr = rr.get("frame") or {}
        where = f" at {os.path.basename(fr.get('file') or '?')}:{fr.get('line')}" if fr else ""
        res.status = "crash"
        res.detail = (f"a worker re-imported the script as __mp_main__, ran its top level again and {rr.get('what')}"
                      f"{where} (no `if __name__ == \"__main__\":` guard); loaderdoctor ended it")
        return
    ex = res.exit
    if ex is None:
        rc = res.returncode
        if rc is not None and rc < 0:
            name = crash.signal_name(rc)
            res.status, res.detail = "crash", f"the script's process was killed by {name}"
        else:
            res.status, res.detail = "crash", f"the runner ended without reporting (exit code {rc})"
        return
    how = ex.get("how")
    if how == "exception":
        exc = ex.get("exc") or {}
        res.status = "crash"
        res.detail = f"{exc.get('type')}: {_first_line(exc.get('message'))}"
    elif how == "sysexit" and ex.get("code"):
        res.status, res.detail = "failed", f"the script called sys.exit({ex.get('code')})"
    elif res.batches == 0:
        res.status, res.detail = "failed", "the script never iterated a DataLoader"
    else:
        res.status = "ok"
        res.detail = {"stopped": "stopped after the measured steps", "finished": "the script finished",
                      "sysexit": "the script exited"}.get(how, how or "")
        if how == "stopped":
            stop = next((e for e in res.events if e.get("e") == "stop"), None)
            if stop and stop.get("why") == "time":
                res.detail = "stopped at the time bound"


def _first_line(s: str | None) -> str:
    s = (s or "").strip()
    return s.splitlines()[0] if s else ""
