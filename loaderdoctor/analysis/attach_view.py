"""attach, pure: the sampled tree indexed by process and thread; roles, each worker's state and
progress, the loop thread's analysis and the hang record. The rules are in analysis/attach.py."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from loaderdoctor.analysis.attach_frames import (
    _file,
    _has,
    _key,
    _local,
    frame,
    in_collective,
    in_data_wait,
    is_busy_worker_stack,
    is_pin_stack,
    is_torch_data,
    is_user,
    is_worker_stack,
    waiting_on,
)
from loaderdoctor.analysis.culprits import find_culprit, own_frames
from loaderdoctor.frames import ProcessStack, ThreadStack

MIN_SAMPLES = 10            # fewer loop-thread samples and nothing is decided


PROGRESS_CPU_SHARE = 0.10   # of one core over the window: a worker (or main) this busy is working


PROGRESS_CTX_PER_S = 2.0    # voluntary context switches per second: sleeping/reading, not blocked


TOP_FRAMES = 5


Z95 = 1.959964


CI_NOTE = ("Wilson 95% interval over the loop thread's samples, taken as independent; consecutive samples "
           "within one long wait are correlated, so the true uncertainty is somewhat wider.")


STAGE = "attach"


def wilson(k: int, n: int, z: float = Z95) -> list[float] | None:
    """Wilson score interval for k successes in n trials."""
    if n <= 0:
        return None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [round(max(0.0, mid - half), 4), round(min(1.0, mid + half), 4)]


@dataclass
class Thread:
    pid: int
    tid: int | None
    name: str | None
    samples: list[list[dict]]  # each innermost first


@dataclass
class View:
    window_s: float
    threads: dict[int, list[Thread]]
    first: dict[int, dict]
    last: dict[int, dict]
    readings: dict[int, list[dict]]
    start: dict[int, list[dict]]   # locals dumps: pid -> threads
    end: dict[int, list[dict]]
    ancestry: dict[int, list[int]]
    order: list[int] = field(default_factory=list)


def index(record: dict) -> View:
    st = record.get("stacks") or {}
    frames = st.get("frames") or []
    threads: dict[int, list[Thread]] = {}
    for t in st.get("threads") or []:
        if t.get("pid") is None:
            continue
        threads.setdefault(t["pid"], []).append(
            Thread(t["pid"], t.get("tid"), t.get("name"), [[frames[i] for i in s] for s in t.get("samples") or []]))
    first, last, order = {}, {}, []
    for p in record.get("processes") or []:
        order.append(p["pid"])
        if p.get("first"):
            first[p["pid"]] = p["first"]
        if p.get("last"):
            last[p["pid"]] = p["last"]
    readings: dict[int, list[dict]] = {}
    for r in record.get("readings") or []:
        readings.setdefault(r["pid"], []).append(r)
    dumps = record.get("dumps") or {}
    return View(window_s=float(record.get("window_s") or 0.0), threads=threads, first=first, last=last,
                readings=readings,
                start={d["pid"]: d["threads"] for d in dumps.get("start") or []},
                end={d["pid"]: d["threads"] for d in dumps.get("end") or []},
                ancestry={int(k): v for k, v in (st.get("ancestry") or {}).items()},
                order=order or sorted(threads))


def _all_samples(v: View, pid: int) -> list[list[dict]]:
    out = [s for t in v.threads.get(pid, []) for s in t.samples]
    for src in (v.end, v.start):  # a process py-spy record missed: its dumps still say what it runs
        out.extend(t["frames"] for t in src.get(pid, []))
    return out


def _ppid(v: View, pid: int) -> int | None:
    for src in (v.first, v.last):
        if pid in src and src[pid].get("ppid") is not None:
            return src[pid]["ppid"]
    chain = v.ancestry.get(pid) or []
    return chain[-2] if len(chain) >= 2 else None


def assign_roles(v: View) -> dict[int, str]:
    pids = list(dict.fromkeys(v.order + list(v.threads) + list(v.end)))
    roles = {pid: "other" for pid in pids}
    for pid in pids:
        if any(is_worker_stack(own_frames(s)) for s in _all_samples(v, pid)):
            roles[pid] = "worker"
    for pid in pids:
        if roles[pid] == "worker":
            parent = _ppid(v, pid)
            if parent in roles and roles[parent] != "worker":
                roles[parent] = "main"
    for pid in pids:
        if roles[pid] == "other" and any(in_data_wait(s) for s in _all_samples(v, pid)):
            roles[pid] = "main"
    return roles


def _main_named(threads: list[Thread], pid: int) -> Thread | None:
    return next((t for t in threads if t.name == "MainThread"), None) or \
        next((t for t in threads if t.tid == pid), None) or (threads[0] if threads else None)


def loop_thread(v: View, pid: int) -> Thread | None:
    threads = [t for t in v.threads.get(pid, []) if not any(is_pin_stack(s) for s in t.samples)]
    if not threads:
        return None
    counts = {id(t): sum(in_data_wait(s) for s in t.samples) for t in threads}
    best = max(threads, key=lambda t: (counts[id(t)], t.name == "MainThread"))
    return best if counts[id(best)] else _main_named(threads, pid)


def _dump_thread(dump: list[dict] | None, t: Thread | None) -> dict | None:
    if not dump:
        return None
    if t is not None:
        for d in dump:
            if t.tid is not None and d.get("tid") == t.tid:
                return d
        for d in dump:
            if t.name and d.get("name") == t.name:
                return d
    return next((d for d in dump if d.get("name") == "MainThread"), dump[0])


def _delta(v: View, pid: int, key: str) -> float | None:
    a, b = v.first.get(pid), v.last.get(pid)
    if not a or not b or a.get(key) is None or b.get(key) is None:
        return None
    return b[key] - a[key]


def _span(v: View, pid: int) -> float:
    a, b = v.first.get(pid), v.last.get(pid)
    if a and b and b.get("t") is not None and a.get("t") is not None and b["t"] > a["t"]:
        return b["t"] - a["t"]
    return v.window_s or 1.0


def _mb(b: float | None) -> float | None:
    return None if b is None else round(b / 2**20, 1)


def usage(v: View, pid: int) -> dict:
    span = _span(v, pid)
    cpu = _delta(v, pid, "cpu_s")
    ctx = _delta(v, pid, "ctx_voluntary")
    last = v.last.get(pid) or v.first.get(pid) or {}
    rss = [r["rss"] for r in v.readings.get(pid, []) if r.get("rss")] + [x["rss"] for x in (v.first.get(pid), v.last.get(pid))
                                                                      if x and x.get("rss")]
    return {"cpu_s": None if cpu is None else round(cpu, 3),
            "cpu_pct": None if cpu is None else round(100 * cpu / span, 1),
            "ctx_voluntary_per_s": None if ctx is None else round(ctx / span, 1),
            "rss_mb": _mb(last.get("rss")), "rss_peak_mb": _mb(max(rss) if rss else None),
            "uss_mb": _mb(last.get("uss"))}


def worker_state(v: View, pid: int) -> dict:
    threads = v.threads.get(pid, [])
    t = _main_named(threads, pid)
    own = [own_frames(s) for s in (t.samples if t else [])]
    busy = [s for s in own if is_busy_worker_stack(s)]
    distinct = len({tuple(_key(f) for f in s) for s in busy})
    start_t, end_t = _dump_thread(v.start.get(pid), t), _dump_thread(v.end.get(pid), t)
    b0 = _local(start_t["frames"], "_worker_loop", "idx") if start_t else None
    b1 = _local(end_t["frames"], "_worker_loop", "idx") if end_t else None
    wid = None
    for d in (end_t, start_t):
        if d and wid is None:
            wid = _local(d["frames"], "_worker_loop", "worker_id")
    u = usage(v, pid)
    first = v.first.get(pid)
    if first is not None and (first.get("t") or 0) > 0:
        progressed, why = True, "it started during the window (a new iterator or epoch)"
    elif pid not in v.last:
        progressed, why = True, "it exited during the window (its iterator ended)"
    elif b0 is not None and b1 is not None:
        progressed = b1 != b0
        why = f"its task index went from {b0} to {b1}" if progressed else f"it was on task {b1} at both ends"
    elif b0 is None and b1 is not None and start_t and _has(start_t["frames"], "_worker_loop"):
        progressed, why = True, f"it received its first task ({b1}) during the window"
    else:
        cpu_share = (u["cpu_pct"] or 0) / 100
        ctx = u["ctx_voluntary_per_s"] or 0
        signs = []
        if distinct > 1:
            signs.append(f"{distinct} different busy stacks")
        if cpu_share >= PROGRESS_CPU_SHARE:
            signs.append(f"{u['cpu_pct']}% CPU")
        if ctx >= PROGRESS_CTX_PER_S:
            signs.append(f"{ctx} context switches/s")
        progressed = bool(signs)
        why = (", ".join(signs) if signs else
               f"same stack in every sample, {u['cpu_pct']}% CPU, {ctx} context switches/s")
    return {"pid": pid, "worker_id": wid, "samples": len(own), "busy_samples": len(busy),
            "busy_share": round(len(busy) / len(own), 3) if own else None, "distinct_busy_stacks": distinct,
            "task_start": b0, "task_end": b1, "progressed": progressed, "why": why, **u,
            "_own": own, "_thread": t}


def busiest(own_samples: list[list[dict]], total: int, top: int = TOP_FRAMES) -> list[dict]:
    """The innermost user frame (else the innermost frame) of each busy worker sample, counted."""
    c: Counter = Counter()
    keep: dict[tuple, dict] = {}
    for s in own_samples:
        if not is_busy_worker_stack(s):
            continue
        f = next((f for f in s if is_user(f)), s[0] if s else None)
        if f is None:
            continue
        c[_key(f)] += 1
        keep.setdefault(_key(f), frame(f))
    return [{**keep[k], "samples": n, "share": round(n / total, 3) if total else None} for k, n in c.most_common(top)]


def busiest_loop(samples: list[list[dict]], top: int = TOP_FRAMES) -> list[dict]:
    """The loop thread outside the DataLoader (the step): its innermost user frames, counted."""
    c: Counter = Counter()
    keep: dict[tuple, dict] = {}
    for s in samples:
        if in_data_wait(s):
            continue
        f = next((f for f in s if is_user(f)), None)
        if f is not None:
            c[_key(f)] += 1
            keep.setdefault(_key(f), frame(f))
    n = len(samples)
    return [{**keep[k], "samples": k2, "share": round(k2 / n, 3) if n else None} for k, k2 in c.most_common(top)]


def _loop_site(samples: list[list[dict]]) -> dict | None:
    """The user frame that calls into the DataLoader (the training loop's `for` line)."""
    c: Counter = Counter()
    keep = {}
    for s in samples:
        if not in_data_wait(s):
            continue
        k = next((i for i, f in enumerate(s) if is_torch_data(f)), None)
        if k is None:
            continue
        outer = next((f for f in s[k:] if is_user(f)), None)
        if outer:
            c[_key(outer)] += 1
            keep.setdefault(_key(outer), frame(outer))
    return keep[c.most_common(1)[0][0]] if c else None


def _start_method(v: View, wpid: int) -> str | None:
    cmd = " ".join((v.first.get(wpid) or v.last.get(wpid) or {}).get("cmdline") or [])
    files = {_file(f).rsplit("/", 1)[-1] for s in _all_samples(v, wpid)[:3] for f in s}
    if "forkserver" in cmd or "popen_forkserver.py" in files or "forkserver.py" in files:
        return "forkserver"
    if "spawn_main" in cmd or "spawn.py" in files:
        return "spawn"
    if "popen_fork.py" in files:
        return "fork"
    return None


def _dataset_name(own_samples: list[list[dict]]) -> str | None:
    for s in own_samples:
        for f in s:
            fn = f.get("function") or ""
            if fn.endswith(("__getitem__", "__iter__", "__getitems__")) and is_user(f) and "." in fn:
                return fn.rsplit(".", 1)[0]
    return None


def _rank(v: View, pid: int) -> int | None:
    env = (v.first.get(pid) or v.last.get(pid) or {}).get("env") or {}
    try:
        return int(env["RANK"]) if "RANK" in env else None
    except ValueError:
        return None


def analyse_main(v: View, pid: int, roles: dict[int, str]) -> dict:
    lt = loop_thread(v, pid)
    samples = lt.samples if lt else []
    n = len(samples)
    k = sum(in_data_wait(s) for s in samples)
    workers = [worker_state(v, w) for w, r in roles.items() if r == "worker" and _ppid(v, w) == pid]
    pin = [t for t in v.threads.get(pid, []) if any(is_pin_stack(s) for s in t.samples)]
    u = usage(v, pid)
    distinct = len({tuple(_key(f) for f in s) for s in samples})
    end_t = _dump_thread(v.end.get(pid), lt)
    start_t = _dump_thread(v.start.get(pid), lt)
    now = (end_t or {}).get("frames") or (samples[-1] if samples else [])
    m = {"pid": pid, "rank": _rank(v, pid), "thread": lt.name if lt else None, "samples": n, "wait_samples": k,
         "data_wait_fraction": round(k / n, 4) if n else None, "data_wait_ci": wilson(k, n),
         "distinct_stacks": distinct, "loop_site": _loop_site(samples), "pin_memory_thread": bool(pin),
         "frozen": False, "frozen_on": None, **u}
    cpu_share = (u["cpu_pct"] or 0) / 100
    if n < MIN_SAMPLES:
        m["state"] = "too-few-samples"
    elif k == n:
        m["state"] = "waiting-for-batch"
        if workers:
            m["frozen"] = not any(w["progressed"] for w in workers)
        else:  # num_workers=0: the main thread loads the batch itself
            m["frozen"] = distinct == 1 and cpu_share < PROGRESS_CPU_SHARE
        m["frozen_on"] = "batch" if m["frozen"] else None
    elif k == 0 and distinct == 1 and (cpu_share < PROGRESS_CPU_SHARE or in_collective(samples[0])):
        m["state"], m["frozen"], m["frozen_on"] = "blocked", True, "main"
    else:
        m["state"] = "running"
    m["waiting"] = waiting_on(now) if m["frozen"] or m["state"] == "waiting-for-batch" else None
    # the worker the main waits for: torch's own bookkeeping, read from the locals dumps
    owed = None
    for d in (end_t, start_t):
        if d and owed is None:
            owed = _local(d["frames"], "_next_data", "worker_id")
    owing = next((w for w in workers if owed is not None and w["worker_id"] == owed), None)
    how = "torch's own record (worker_id in the main's _next_data)" if owing else None
    if owing is None and m["frozen_on"] == "batch":
        always = [w for w in workers if w["samples"] and w["busy_samples"] == w["samples"]]
        owing = always[0] if always else None
        how = "the only worker busy in every sample" if owing and len(always) == 1 else \
            ("the first of the workers busy in every sample" if owing else None)
    m["owing_worker"] = ({"pid": owing["pid"], "worker_id": owing["worker_id"], "task": owing["task_end"],
                          "how": how} if owing and m["state"] == "waiting-for-batch" else None)
    all_own = [s for w in workers for s in w["_own"]]
    m["busiest_worker_frames"] = busiest(all_own, len(all_own))
    m["busiest_loop_frames"] = busiest_loop(samples)
    m["workers"] = workers
    m["_loop"] = lt
    m["_now"] = now
    m["_end_dump"] = v.end.get(pid)
    m["start_method"] = next((sm for sm in (_start_method(v, w["pid"]) for w in workers) if sm), None)
    m["dataset"] = _dataset_name(all_own)
    return m


def _hang(v: View, m: dict, capture_s: float | None = None) -> dict:
    procs = [{"pid": m["pid"], "role": "main", "thread": m["thread"], "frames": [frame(f) for f in m["_now"]]}]
    for t in v.threads.get(m["pid"], []):
        if any(is_pin_stack(s) for s in t.samples):
            d = _dump_thread(m["_end_dump"], t)
            fr = d["frames"] if d else (t.samples[-1] if t.samples else [])
            procs.append({"pid": m["pid"], "role": "pin_memory", "thread": t.name, "frames": [frame(f) for f in fr]})
    owing = (m.get("owing_worker") or {}).get("pid")
    ws = sorted(m["workers"], key=lambda w: (w["pid"] != owing, w["worker_id"] if w["worker_id"] is not None else 1e9,
                                             w["pid"]))
    stacks = [ProcessStack(m["pid"], "main", [ThreadStack(m["thread"], m["_now"])])]
    for w in ws:
        d = _dump_thread(v.end.get(w["pid"]), w["_thread"])
        fr = own_frames(d["frames"]) if d else (w["_own"][-1] if w["_own"] else [])
        procs.append({"pid": w["pid"], "role": "worker", "worker_id": w["worker_id"], "thread": "MainThread",
                      "frames": [frame(f) for f in fr]})
        stacks.append(ProcessStack(w["pid"], "worker", [ThreadStack("MainThread", fr)]))
    culprit = find_culprit(stacks)
    if culprit and culprit["role"] == "worker":
        culprit["worker_id"] = next((w["worker_id"] for w in ws if w["pid"] == culprit["pid"]), None)
    return {"stage": STAGE, "rank": m["rank"], "method": "py-spy", "processes": procs, "culprit": culprit,
            "waiting": m["waiting"], "owing_worker": m["owing_worker"], "idle_s": round(v.window_s, 1),
            "capture_s": capture_s, "window_s": round(v.window_s, 1)}
