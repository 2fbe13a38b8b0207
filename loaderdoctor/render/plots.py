"""PNG plots from a report dict (matplotlib, Agg). Rendering only: no measuring here.

The baseline (the real training run) is the reference line of every plot that has one.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASE = "#444444"
DATA = "#d95f02"
COMPUTE = "#1b9e77"
OTHER = "#7570b3"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def step_timeline(r: dict) -> bytes | None:
    rows = (r.get("timelines") or {}).get("baseline") or []
    rows = [x for x in rows if x.get("compute") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    xs = [x["i"] for x in rows]
    waits = [1000 * x["wait"] for x in rows]
    comps = [1000 * x["compute"] for x in rows]
    ax.bar(xs, waits, color=DATA, label="data wait", width=1.0)
    ax.bar(xs, comps, bottom=waits, color=COMPUTE, label="compute", width=1.0)
    firsts = [x["i"] for x in rows if x.get("first")]
    for i in firsts:
        ax.axvline(i, color=BASE, lw=0.6, ls=":")
    ax.set_xlabel("batch of the training loader (dotted: an iterator's first batch)")
    ax.set_ylabel("ms")
    ax.set_title("Baseline: the real training run, step by step")
    ax.legend(loc="upper right")
    return _png(fig)


def workers_throughput(r: dict) -> bytes | None:
    rows = [x for x in r.get("workers_sweep") or [] if x.get("samples_per_s")]
    if len(rows) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [x["num_workers"] for x in rows]
    ys = [x["samples_per_s"] for x in rows]
    ax.plot(xs, ys, "o-", color=DATA, label="loader only (measured)")
    one = next((x["samples_per_s"] for x in rows if x["num_workers"] == 1), None)
    if one:
        ideal = [one * max(n, 1) for n in xs]
        ax.plot(xs, ideal, "--", color=OTHER, label="ideal linear from 1 worker")
    base = (r.get("baseline") or {}).get("samples_per_s")
    if base:
        ax.axhline(base, color=BASE, label="baseline training run")
    ax.set_ylim(0, max(ys + [base or 0]) * 1.3)
    ax.set_xlabel("num_workers")
    ax.set_ylabel("samples/s")
    ax.set_title("Throughput by num_workers")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def transform_costs(r: dict) -> bytes | None:
    rows = [x for x in r.get("transforms") or [] if x.get("ms_per_sample") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(rows)))
    names = [f"{x['position']}: {x['name']}" for x in rows][::-1]
    ax.barh(names, [x["ms_per_sample"] for x in rows][::-1], color=DATA, label="transform (measured)")
    base = (r.get("baseline") or {}).get("ms_per_sample")
    if base:
        ax.axvline(base, color=BASE, label="baseline training loop, per sample")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("ms per sample (inside the loader's processes)")
    ax.set_title("Cost of each transform")
    return _png(fig)


def utilisation(r: dict) -> bytes | None:
    stages = r.get("stage_samples") or {}
    if not stages:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    offset = 0.0
    gpu_keys: set[str] = set()
    for name, s in stages.items():
        series = (s or {}).get("series") or []
        if not series:
            continue
        ts = [offset + p["t"] for p in series]
        ax.plot(ts, [p.get("cpu_system") or 0 for p in series], color=BASE, lw=0.8)
        ax.plot(ts, [p.get("cpu_main", 0) for p in series], color=COMPUTE, lw=0.8)
        ax.plot(ts, [p.get("cpu_workers", 0) for p in series], color=DATA, lw=0.8)
        for k in series[0]:
            if k.endswith("_util"):
                gpu_keys.add(k)
                ax.plot(ts, [p.get(k) or 0 for p in series], color=OTHER, lw=0.8)
        ax.axvline(offset, color="#999999", lw=0.6, ls=":")
        ax.text(offset, 1.0, name, rotation=90, va="top", fontsize=6, transform=ax.get_xaxis_transform())
        offset = ts[-1] + 0.5
    ax.plot([], [], color=BASE, label="system CPU %")
    ax.plot([], [], color=COMPUTE, label="main process CPU %")
    ax.plot([], [], color=DATA, label="workers CPU % (sum)")
    if gpu_keys:
        ax.plot([], [], color=OTHER, label="GPU utilisation %")
    ax.set_xlabel("seconds (stages back to back)")
    ax.set_ylabel("%")
    ax.set_title("CPU and GPU use over the probe")
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


PLOTS = {"timeline": step_timeline, "workers": workers_throughput, "transforms": transform_costs,
         "utilisation": utilisation}


def render_all(r: dict) -> dict[str, bytes]:
    out = {}
    for name, fn in PLOTS.items():
        png = fn(r)
        if png:
            out[name] = png
    return out
