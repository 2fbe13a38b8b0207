"""One-shot GPU check: what loaderdoctor costs and how well it measures, on a real accelerator.

    PYTHONPATH=. python benchmarks/gpu_check.py [--out PATH] [--rounds N] [--budget S] [--dry-run]

(a) overhead: a GPU-bound step (ResNet-50, bf16 autocast, random batches already on the
    device; workloads/gpu_step.py) run plain (`python gpu_step.py`) and instrumented (the
    same script as a loaderdoctor stage: runner child with the hooks, event stream, watchdog,
    psutil + NVML sampler), alternating which goes first, several rounds. overhead_ratio is
    the median over rounds of instrumented steps/s over plain steps/s (1.0 = free).
(b) accuracy: a data-bound loop whose data time is known (items sleep, num_workers=0;
    workloads/gpu_data_bound.py) run as the baseline stage; data_wait_error is the measured
    mean data wait of the measured steps over the known sleep, minus 1.
(c) NVML: how many sampler rows carried a GPU reading, and the GPU's name.
(d) the batch's copy to the GPU: `loaderdoctor probe` (baseline and loader-only stages) of a
    loop whose pageable batch copy is large (workloads/gpu_copy.py): the copy's measured share
    of the step (report baseline.h2d), the pin-memory stage's pinned copy against the pageable
    one, and the findings raised (h2d-bound, pin-memory). Run when the budget leaves room.

Needs only the stdlib, torch, psutil, pynvml/nvidia-ml-py when present (numpy not at all), and the
project on PYTHONPATH (found from this file's location otherwise). Every wait is bounded and
the whole run keeps inside --budget (default 270 s). Writes JSON (default
benchmarks/results/gpu_check.json) with whatever was measured, even when a part failed.
Exit 0: all measured; 1: a part failed (the JSON's "errors" say which); 2: CUDA is not
available (without --dry-run) or loaderdoctor cannot be imported. --dry-run: CPU, tiny sizes,
to test the plumbing.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GPU_STEP = os.path.join(HERE, "workloads", "gpu_step.py")
DATA_BOUND = os.path.join(HERE, "workloads", "gpu_data_bound.py")
GPU_COPY = os.path.join(HERE, "workloads", "gpu_copy.py")
RATE = re.compile(r"steps_per_s=([\d.]+)")
MODEL = re.compile(r"model=(.+?) params=")
T0 = time.monotonic()

# per mode: (a) warm-up steps, timed steps, batch, image size; (b) sleep per item, batch, steps
SIZES = {
    "gpu": {"warmup": 15, "steps": 100, "batch": 128, "size": 224, "rounds": 3, "budget": 270.0,
            "sleep_item_s": 0.010, "data_batch": 2, "data_steps": 40, "copy_batch": 64, "copy_size": 224},
    "dry": {"warmup": 2, "steps": 6, "batch": 2, "size": 32, "rounds": 2, "budget": 150.0,
            "sleep_item_s": 0.010, "data_batch": 2, "data_steps": 12, "copy_batch": 4, "copy_size": 32},
}


def say(msg: str) -> None:
    print(f"[gpu_check {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def fail(msg: str, code: int = 2):
    print(f"gpu_check: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def _first(modules: tuple[str, ...], names: tuple[str, ...]):
    """The named attributes from the first module that has them all (the package is being
    restructured: stage.py may move under orchestrate/, gpu.py under observe/)."""
    errors = []
    for mod in modules:
        try:
            m = importlib.import_module(mod)
            return tuple(getattr(m, n) for n in names)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{mod}: {exc}")
    raise ImportError("; ".join(errors))


def environment(dry: bool) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cpu_count": os.cpu_count(), "platform": platform.platform(), "dry_run": dry}
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except Exception:
        env["torchvision"] = None
    try:
        import psutil

        env["psutil"] = psutil.__version__
    except Exception:
        env["psutil"] = None
    env["gpu_name"], env["nvml"] = None, None
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        env["gpu_name"] = name if isinstance(name, str) else name.decode()
        drv = pynvml.nvmlSystemGetDriverVersion()
        env["nvml"] = {"available": True, "driver": drv if isinstance(drv, str) else drv.decode()}
    except Exception as exc:
        env["nvml"] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    if env["gpu_name"] is None and not dry and torch.cuda.is_available():
        env["gpu_name"] = torch.cuda.get_device_name(0)
    if dry:
        env["gpu_name"] = env["gpu_name"] or "cpu (dry run)"
    return env


def nvml_rows(samples: dict | None) -> int:
    """Sampler rows (one per sample) that carried a GPU utilisation reading."""
    return sum(1 for row in (samples or {}).get("system", [])
               if any(k.startswith("gpu") and k.endswith("_util") and v is not None for k, v in row.items()))


def gpu_util_mean(samples: dict | None) -> float | None:
    vals = [v for row in (samples or {}).get("system", []) for k, v in row.items()
            if k.startswith("gpu") and k.endswith("_util") and v is not None]
    return round(statistics.fmean(vals), 1) if vals else None


def child_env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": ROOT + (os.pathsep + path if path else "")}


def plain_rate(argv: list[str], limit: float) -> tuple[float, str | None]:
    out = subprocess.run([sys.executable, GPU_STEP, *argv], capture_output=True, text=True, timeout=limit,
                         env={**os.environ, **child_env()}, cwd=ROOT)
    m = RATE.search(out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"plain run failed (exit {out.returncode}): {out.stderr[-1500:]}")
    model = MODEL.search(out.stdout)
    return float(m.group(1)), model.group(1) if model else None


def instrumented_rate(stage_api, argv: list[str], run_dir: str, name: str, gpus, limit: float) -> tuple[float, dict]:
    StageSpec, run_stage = stage_api
    # steps far above the workload's own: the script finishes by itself, fully timed
    spec = StageSpec(name=name, target=GPU_STEP, argv=argv, steps=10**9, warmup=3, timeout=30.0,
                     first_batch_timeout=60.0, max_seconds=max(10.0, limit), env=child_env(), cwd=ROOT,
                     sample_interval=0.2)
    res = run_stage(spec, run_dir, gpus=gpus)
    info = {"status": res.status, "detail": res.detail, "stage_s": res.seconds,
            "nvml_samples": nvml_rows(res.samples), "samples": (res.samples or {}).get("samples"),
            "gpu_util_mean": gpu_util_mean(res.samples)}
    text = ""
    if res.stdout_path and os.path.exists(res.stdout_path):
        with open(res.stdout_path) as f:
            text = f.read()
    m = RATE.search(text)
    if res.status != "ok" or not m:
        raise RuntimeError(f"instrumented run {res.status}: {res.detail}; {res.stderr_tail[-1500:]}")
    return float(m.group(1)), info


def data_bound(stage_api, cfg: dict, device: str, run_dir: str, gpus, limit: float) -> dict:
    """(b): the baseline stage on a loop whose data wait is known; the measured steps are
    those the analysis counts (not an iterator's first batch, not the warm-up)."""
    StageSpec, run_stage = stage_api
    known = cfg["sleep_item_s"] * cfg["data_batch"]
    warmup = 3
    spec = StageSpec(name="baseline", target=DATA_BOUND, argv=[device, str(cfg["sleep_item_s"]), str(cfg["data_batch"])],
                     steps=cfg["data_steps"], warmup=warmup, timeout=30.0, first_batch_timeout=60.0,
                     max_seconds=max(10.0, limit), env=child_env(), cwd=ROOT, sample_interval=0.2)
    res = run_stage(spec, run_dir, gpus=gpus)
    waits, computes, seen, pending = [], [], 0, None
    for ev in res.events:  # a batch's compute is closed by the next batch's "c" or its iterator's "end"
        kind = ev.get("e")
        if kind in ("b", "end") and pending is not None and "s" not in ev and ev.get("c") is not None:
            waits.append(pending)
            computes.append(ev["c"])
        if kind in ("b", "end", "it"):
            pending = None
        if kind == "b" and "s" not in ev:  # measured: not an iterator's first batch, past the warm-up
            seen += 1
            pending = ev["w"] if seen > warmup else None
    out = {"status": res.status, "detail": res.detail, "stage_s": res.seconds, "known_wait_s": known,
           "steps": len(waits), "nvml_samples": nvml_rows(res.samples),
           "samples": (res.samples or {}).get("samples"), "late_samples": (res.samples or {}).get("late_samples"),
           "sampler_cpu_pct_of_core": (res.samples or {}).get("sampler_cpu_pct_of_core")}
    if waits:
        mean = statistics.fmean(waits)
        out.update(mean_wait_s=round(mean, 6), median_wait_s=round(statistics.median(waits), 6),
                   mean_compute_s=round(statistics.fmean(computes), 6),
                   data_wait_fraction=round(sum(waits) / (sum(waits) + sum(computes)), 4),
                   data_wait_error=round(mean / known - 1, 5))
    else:
        raise RuntimeError(f"data-bound stage measured no steps ({res.status}: {res.detail}); "
                           f"{res.stderr_tail[-1500:]}")
    return out


def copy_probe(cfg: dict, device: str, limit: float) -> dict:
    """(d): a probe of the copy-heavy loop, baseline and loader-only (the pin-memory stage
    runs after loader-only when the baseline's copies were pageable and measurable)."""
    with tempfile.TemporaryDirectory(prefix="gpu_copy-") as out:
        cmd = [sys.executable, "-m", "loaderdoctor", "probe", GPU_COPY, "--stages", "baseline,loader-only",
               "--steps", "30", "--budget", str(int(limit)), "--out", out, "-q", "--",
               device, str(cfg["copy_batch"]), str(cfg["copy_size"])]
        t = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=limit + 30,
                             env={**os.environ, **child_env()}, cwd=ROOT)
        path = os.path.join(out, "report.json")
        if not os.path.exists(path):
            raise RuntimeError(f"probe wrote no report (exit {res.returncode}): {res.stderr[-1500:]}")
        with open(path) as f:
            r = json.load(f)
    return {"exit": res.returncode, "wall_s": round(time.monotonic() - t, 1),
            "stages": {s["name"]: s["status"] for s in r["stages"]},
            "h2d": (r.get("baseline") or {}).get("h2d"), "pin_memory": r.get("pin_memory"),
            "gpu_idle_fraction": (r.get("baseline") or {}).get("gpu_idle_fraction"),
            "findings": [(f["id"], f["severity"], (f.get("impact") or {}).get("share")) for f in r["findings"]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "gpu_check.json"))
    ap.add_argument("--dry-run", action="store_true", help="CPU and tiny sizes: test the plumbing")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole check")
    args = ap.parse_args(argv)
    mode = "dry" if args.dry_run else "gpu"
    cfg = dict(SIZES[mode])
    rounds = args.rounds or cfg["rounds"]
    budget = args.budget or cfg["budget"]
    deadline = T0 + budget

    def left() -> float:
        return deadline - time.monotonic()

    try:
        import torch
    except Exception as exc:
        fail(f"torch cannot be imported ({exc}).")
    if not args.dry_run and not torch.cuda.is_available():
        fail("CUDA is not available here (torch.cuda.is_available() is False): this check needs a GPU. "
             "Use --dry-run to test the plumbing on the CPU.")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    try:
        stage_api = _first(("loaderdoctor.orchestrate.supervise",), ("StageSpec", "run_stage"))
        (Gpus,) = _first(("loaderdoctor.observe.gpu",), ("Gpus",))
    except ImportError as exc:
        fail(f"loaderdoctor cannot be imported from {ROOT} ({exc}); run from the repository with PYTHONPATH=.")
    out_path = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)

    device = "cpu" if args.dry_run else "cuda"
    env = environment(args.dry_run)
    gpus = Gpus()
    result = {"check": "gpu_check", "version": 1, "when": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              **env, "nvml_sampler": {"available": gpus.available, "reason": gpus.reason},
              "budget_s": budget, "gpu_step": {k: cfg[k] for k in ("warmup", "steps", "batch", "size")},
              "model": None, "overhead_ratio": None, "rounds": [], "data_bound": None, "data_wait_error": None,
              "nvml_samples": 0, "copy": None, "errors": []}
    say(f"{'DRY RUN on the CPU' if args.dry_run else env['gpu_name']}: torch {env['torch']}, cuda {env['cuda']}, "
        f"NVML sampler {'on' if gpus.available else 'off (' + gpus.reason + ')'}; budget {budget:.0f} s")

    def save() -> None:
        result["wall_s"] = round(time.monotonic() - T0, 1)
        tmp = out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, default=str)
        os.replace(tmp, out_path)

    step_argv = [device, str(cfg["warmup"]), str(cfg["steps"]), str(cfg["batch"]), str(cfg["size"])]
    if args.dry_run:
        step_argv.append("tiny")
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as run_dir:
        # (b) first: short, and its numbers matter whatever happens to the rounds
        say(f"(b) data-bound baseline stage: {cfg['data_batch']} items x {cfg['sleep_item_s'] * 1e3:g} ms "
            f"sleep per batch, {cfg['data_steps']} steps")
        try:
            db = data_bound(stage_api, cfg, device, run_dir, gpus, min(90.0, left() - 30))
            result["data_bound"] = db
            result["data_wait_error"] = db["data_wait_error"]
            say(f"(b) mean data wait {db['mean_wait_s'] * 1e3:.2f} ms vs known {db['known_wait_s'] * 1e3:.1f} ms: "
                f"data_wait_error={db['data_wait_error']:+.4f}; NVML samples {db['nvml_samples']}/{db['samples']}")
        except Exception as exc:
            result["errors"].append(f"data-bound: {type(exc).__name__}: {exc}")
            say(f"(b) FAILED: {exc}")
        save()

        # (a) rounds, alternating which arm goes first; stop early rather than overrun the budget
        round_s = None
        for r in range(rounds):
            need = (round_s or 60.0) * 1.3 + 10
            if left() < need:
                result["errors"].append(f"rounds: stopped after {r} of {rounds}: {left():.0f} s left, a round needs ~{need:.0f} s")
                say(f"(a) stopping after {r} rounds (budget)")
                break
            t_round = time.monotonic()
            row: dict = {"round": r + 1, "order": "plain-first" if r % 2 == 0 else "instrumented-first"}
            try:
                for arm in (("plain", "instrumented") if r % 2 == 0 else ("instrumented", "plain")):
                    t = time.monotonic()
                    limit = min(150.0, max(20.0, left() - 10))
                    if arm == "plain":
                        row["plain_steps_per_s"], model = plain_rate(step_argv, limit)
                        result["model"] = result["model"] or model
                    else:
                        row["instrumented_steps_per_s"], info = instrumented_rate(
                            stage_api, step_argv, run_dir, f"overhead-{r + 1}", gpus, limit)
                        row["instrumented"] = info
                        result["nvml_samples"] += info["nvml_samples"]
                    row[f"{arm}_wall_s"] = round(time.monotonic() - t, 1)
                row["ratio"] = round(row["instrumented_steps_per_s"] / row["plain_steps_per_s"], 5)
                say(f"(a) round {r + 1}: plain {row['plain_steps_per_s']:.2f} steps/s, instrumented "
                    f"{row['instrumented_steps_per_s']:.2f} steps/s, ratio {row['ratio']:.4f}")
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
                result["errors"].append(f"round {r + 1}: {row['error']}")
                say(f"(a) round {r + 1} FAILED: {exc}")
            result["rounds"].append(row)
            round_s = time.monotonic() - t_round
            ratios = [x["ratio"] for x in result["rounds"] if "ratio" in x]
            if ratios:
                result["overhead_ratio"] = round(statistics.median(ratios), 5)
                result["overhead_ratio_min_max"] = [min(ratios), max(ratios)]
                plain = [x["plain_steps_per_s"] for x in result["rounds"] if "ratio" in x]
                instr = [x["instrumented_steps_per_s"] for x in result["rounds"] if "ratio" in x]
                result["overhead_ratio_best_of"] = round(max(instr) / max(plain), 5)
                result["plain_steps_per_s_median"] = round(statistics.median(plain), 4)
                result["instrumented_steps_per_s_median"] = round(statistics.median(instr), 4)
            save()

        # (d) the batch's copy, when the budget leaves room for a short probe
        if left() > 75:
            say(f"(d) copy probe: {cfg['copy_batch']} x 3 x {cfg['copy_size']}^2 float32 per batch, pageable")
            try:
                result["copy"] = cp = copy_probe(cfg, device, min(120.0, left() - 20))
                h = cp["h2d"] or {}
                say(f"(d) stages {cp['stages']}; copy share {h.get('share')}, GPU {h.get('gpu_s')} s, host "
                    f"{h.get('host_s')} s per batch; pin-memory {cp['pin_memory']}; findings {cp['findings']}")
            except Exception as exc:
                result["errors"].append(f"copy: {type(exc).__name__}: {exc}")
                say(f"(d) FAILED: {exc}")
        else:
            result["copy"] = None
            say(f"(d) skipped: {left():.0f} s left")

    if result["data_bound"]:
        result["nvml_samples"] += result["data_bound"]["nvml_samples"]
    save()
    say(f"overhead_ratio={result['overhead_ratio']} data_wait_error={result['data_wait_error']} "
        f"nvml_samples={result['nvml_samples']} gpu_name={result['gpu_name']!r}")
    say(f"Wrote {out_path}")
    if result["errors"]:
        print("gpu_check: some parts failed:\n  " + "\n  ".join(result["errors"]), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
