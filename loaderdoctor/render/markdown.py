"""report.md: the same story as the HTML, readable on GitHub."""

from __future__ import annotations

from typing import TextIO

from loaderdoctor.render.attach import markdown_section
from loaderdoctor.render.mdtable import _cell, _fence, _table
from loaderdoctor.render.ranks import markdown_section as _ranks
from loaderdoctor.render.text import (
    VERDICT_TEXT,
    baseline_method,
    dist,
    frame_line,
    gpu_lines,
    ms,
    num,
    pct,
)


def _baseline_method_row(r: dict) -> list[list]:
    b = baseline_method(r)
    return [[b["method"], b["status"], b["detail"], "", "", ""]] if b else []


def _pyspy_note(h: dict) -> str:
    return f" (py-spy not used: {h['py_spy_not_used']})" if h.get("method") != "py-spy" and h.get("py_spy_not_used") \
        else ""


def _head(r: dict, out: TextIO) -> None:
    t = r.get("target") or {}
    out.write(f"# loaderdoctor report: `{_cell(t.get('path'))}`\n\n")
    v = r.get("verdict")
    out.write(f"**Verdict: {v}**: {VERDICT_TEXT.get(v, '')}"
              + (f"; {_cell(r['headline'])}" if r.get("headline") else "") + ".\n\n")
    if r.get("interrupted"):
        out.write("> Interrupted by the user: this is a partial report of what was measured until then.\n\n")


def _findings(r: dict, out: TextIO) -> None:
    out.write("## Findings\n\n")
    if not r.get("findings"):
        out.write("No finding: nothing measured in this run crossed a threshold.\n\n")
    for f in r.get("findings") or []:
        out.write(f"### [{f['severity']}] {_cell(f['title'])} (`{f['id']}`)\n\n")
        out.write(f"**Evidence.** {_cell(f['evidence'])}\n\n**Fix.** {_cell(f['fix'])}\n\n")
        imp = f.get("impact")
        if imp:
            out.write(f"**Impact.** {pct(imp['share'])} of the step ({num(imp.get('ms_per_step'))} ms); fixing it "
                      f"gains at most {imp['ceiling']:.2f}x.\n\n")


def _recommendation(r: dict, out: TextIO) -> None:
    rec = r.get("recommendation") or {}
    if rec:
        out.write("## Recommendation\n\n")
        _table(out, ["setting", "value"], [[k, rec.get(k)] for k in
               ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "multiprocessing_context")])
        sp, ci = rec.get("measured_speedup"), rec.get("speedup_ci")
        span = f" (95% interval {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
        out.write(f"Measured speedup: {'%.2fx' % sp + span if sp is not None else 'not measured'}, "
                  f"{rec.get('status')} ({_cell(rec.get('basis'))}).\n\n")
    fc = rec.get("fix_call")
    if fc:
        out.write(f"The change, in your DataLoader call at `{_cell(fc['file'])}:{fc['line']}` "
                  f"(also as `{rec.get('fix_patch')}` beside this report: `git apply {rec.get('fix_patch')}`):\n\n")
        out.write(_fence(fc["before"]) + "\nbecomes\n\n" + _fence(fc["after"]) + "\n")
    if r.get("measurement_problems"):
        out.write("Measurement problems (these figures are not shown): "
                  f"{_cell('; '.join(r['measurement_problems']))}.\n\n")


def _baseline(r: dict, out: TextIO) -> None:
    b = r.get("baseline") or {}
    out.write("## Baseline: the real training run\n\n")
    if b.get("steps"):
        _table(out, ["steps", "samples/s", "data wait share", "step median", "step p90", "wait median",
                     "wait p90", "compute median", "first batch"],
               [[b["steps"], num(b.get("samples_per_s")), pct(b.get("data_wait_fraction")),
                 dist(b.get("step_s"), "median"), dist(b.get("step_s"), "p90"), dist(b.get("wait_s"), "median"),
                 dist(b.get("wait_s"), "p90"), dist(b.get("compute_s"), "median"), ms(b.get("first_batch_s"))]])
    else:
        out.write(f"Not measured: {_cell(b.get('unmeasured_reason'))}\n\n")
    for line in gpu_lines(r):
        out.write(f"{line}\n\n")

    if "timeline" in (r.get("plots") or []):
        out.write("![per-step data wait and compute](plots/timeline.png)\n\n")


def _sweep(r: dict, out: TextIO) -> None:
    b = r.get("baseline") or {}
    sweep = r.get("workers_sweep") or []
    if sweep:
        out.write("## num_workers sweep (loader only)\n\n")
        rows = []
        if b.get("samples_per_s"):
            train = next((l for l in r.get("loaders") or [] if l.get("role") == "train"), {})
            rows.append([f"**baseline training run ({train.get('num_workers')})**", "", num(b["samples_per_s"]),
                         ms(b.get("first_batch_s")), "", "", ""])
        for w in sweep:
            tag = (" (current)" if w.get("current") else "") + (" (chosen)" if w.get("chosen") else "")
            rows.append([f"{w['num_workers']}{tag}", w["status"], num(w.get("samples_per_s")),
                         ms(w.get("first_batch_s")), w.get("peak_mem_mb"), w.get("cpu_workers_pct"),
                         w.get("cpu_busy_pct")])
        _table(out, ["num_workers", "status", "samples/s", "first batch", "peak USS MB", "workers CPU %",
                     "CPUs busy %"], rows)
        sw = r.get("sweep") or {}
        if sw:
            out.write(f"Effective CPUs {sw.get('effective_cpus')}, cap {sw.get('cap')}; stopped because "
                      f"{sw.get('why_stopped')}.\n\n")
        pfx = r.get("prefetch")
        if pfx and pfx.get("rate"):
            out.write(f"prefetch_factor={pfx['value']} at num_workers={pfx['num_workers']}: {num(pfx['rate'])} "
                      f"samples/s against {num(pfx['default_rate'])} with the default "
                      f"({'kept' if pfx['keep'] else 'no gain of 5%: not kept'}).\n\n")
        if "workers" in (r.get("plots") or []):
            out.write("![throughput by num_workers](plots/workers.png)\n\n")


def _confirm(r: dict, out: TextIO) -> None:
    c = r.get("confirm")
    if c:
        out.write("## Confirm run\n\n")
        sp = c.get("speedup")
        ci = c.get("speedup_ci")
        out.write(f"The real training script re-run with `{_cell(c.get('settings'))}`: {c.get('status')}"
                  + (f"; median {num(c.get('baseline_samples_per_s'))} -> {num(c.get('confirm_samples_per_s'))} "
                     f"samples/s including start-up (**{sp:.2f}x**"
                     + (f", 95% interval {ci[0]:.2f}-{ci[1]:.2f}" if ci else "")
                     + f", {c.get('repeats')} interleaved pair(s): {c.get('verdict')})" if sp is not None else "")
                  + ".\n\n")
        rows = [[i + 1, num(p.get("a_samples_per_s")), num(p.get("b_samples_per_s")),
                 f"{p['b_samples_per_s'] / p['a_samples_per_s']:.2f}" if p.get("a_samples_per_s")
                 and p.get("b_samples_per_s") else "", "yes" if p.get("noisy") else ""]
                for i, p in enumerate(c.get("pairs") or [])]
        if rows:
            _table(out, ["pair", "as written (A)", "recommended (B)", "B / A", "noisy"], rows)


def _transforms(r: dict, out: TextIO) -> None:
    out.write("## Transforms\n\n")
    if r.get("transforms"):
        ref = ([["ref", "baseline training loop (1000 / its samples/s)", (r.get("baseline") or {})["ms_per_sample"],
                 "", ""]] if (r.get("baseline") or {}).get("ms_per_sample") else [])
        _table(out, ["#", "transform", "ms per sample", "share of sample time", "prefix ablation"],
               ref + [[t["position"], t["name"], t.get("ms_per_sample"), pct(t.get("share")), t["status"]]
                      for t in r["transforms"]])
        col = r.get("collate")
        if col:
            out.write(f"Collate: {col['ms_per_batch']} ms per batch, {pct(col['share'])} of fetch time.\n\n")
        if "transforms" in (r.get("plots") or []):
            out.write("![cost of each transform](plots/transforms.png)\n\n")
    else:
        out.write(f"{_cell((r.get('pipeline') or {}).get('reason') or 'Not measured.')}\n\n")


def _context(r: dict, out: TextIO) -> None:
    if r.get("start_methods"):
        out.write("## Start methods\n\n")
        _table(out, ["method", "status", "detail", "threads at start", "native pools", "unpicklable"],
               _baseline_method_row(r) +
               [[m["method"], m["status"], m["detail"], ", ".join(m["threads_at_start"]), ", ".join(m["native_pools"]),
                 (m.get("pickle") or {}).get("path")] for m in r["start_methods"]])
    sf = r.get("script_form")
    if sf:
        kernel = next((s for s in r.get("stages") or [] if s["name"] == "baseline"), {})
        out.write(f"## Notebook vs script\n\nThe same code cells, in a Jupyter kernel (the baseline) and as a plain "
                  f"script (`{_cell(sf.get('path'))}`) in a subprocess:\n\n")
        rows = []
        for name, st, m in (("notebook in a kernel (baseline)", kernel, r.get("baseline") or {}),
                            ("script", sf, sf.get("measured") or {})):
            rows.append([name, st.get("status"), st.get("detail"), m.get("steps"), num(m.get("samples_per_s")),
                         pct(m.get("data_wait_fraction")), ms(m.get("first_batch_s"))])
        _table(out, ["run", "status", "detail", "steps", "samples/s", "data wait", "first batch"], rows)
    pf = r.get("preflight") or {}
    if pf:
        out.write("## Pre-flight\n\n")
        _table(out, ["check", "value"], [[k, pf.get(k)] for k in (
            "num_workers", "prefetch_factor", "batch_bytes", "in_flight_bytes", "shm_bytes_total", "tensors_per_batch",
            "in_flight_tensors", "open_files_limit", "sharing_strategy", "cuda_init_at_fork",
            "worker_threads_total_max", "cpu_count_effective")])


def _loaders_and_stages(r: dict, out: TextIO) -> None:
    if r.get("loaders"):
        out.write("## DataLoaders\n\n")
        _table(out, ["#", "role", "why", "cost share", "site", "dataset", "len", "batch", "workers", "start", "pin",
                     "persistent", "prefetch"],
               [[l.get("index"), l.get("role"), l.get("evidence"), pct(l.get("cost_share")), l.get("site"),
                 l.get("dataset"), l.get("dataset_len"),
                 l.get("batch_size"), l.get("num_workers"), l.get("start_method"), l.get("pin_memory"),
                 l.get("persistent_workers"), l.get("prefetch_factor")] for l in r["loaders"]])

    out.write("## Stages\n\n")
    _table(out, ["stage", "status", "seconds", "detail"],
           [[s["name"], s["status"], num(s.get("seconds")), s.get("detail")] for s in r.get("stages") or []])


def _failures(r: dict, out: TextIO) -> None:
    for h in r.get("hangs") or []:
        out.write(f"## Hang in stage `{_cell(h.get('stage'))}`\n\n")
        c = h.get("culprit")
        out.write(f"Culprit: {_cell(frame_line(c)) if c else 'not found'}"
                  f"{' in the ' + c['role'] + ' process (pid ' + str(c.get('pid')) + ')' if c else ''}. "
                  f"Stacks by {h.get('method')}, captured in {h.get('capture_s')} s"
                  f"{_pyspy_note(h)}.\n\n")
        if h.get("story"):  # a distributed run: who waits for whom
            out.write(f"{_cell(h['story'])}.\n\n")
        if (c or {}).get("source"):
            out.write(_fence("\n".join(f"{l['line']:5d}{' >' if l['hit'] else '  '} {l['text']}"
                                        for l in c["source"])))
        for p in h.get("processes") or []:
            of = f" of rank {p['rank']}" if p.get("rank") is not None else ""
            out.write(f"<details><summary>{_cell(p['role'])}{of} pid {p['pid']}</summary>\n\n")
            out.write(_fence("\n".join(frame_line(f) for f in p.get("frames") or []) or "(no Python frames)"))
            out.write("\n</details>\n\n")

    for c in r.get("crashes") or []:
        out.write(f"## Crash in stage `{_cell(c.get('stage'))}`\n\n")
        if (c.get("culprit") or {}).get("source"):
            out.write(_fence("\n".join(f"{l['line']:5d}{' >' if l['hit'] else '  '} {l['text']}"
                                        for l in c["culprit"]["source"])))
        _table(out, ["role", "pid", "signal", "exit code", "exception", "culprit"],
               [[c.get("role"), c.get("pid"), c.get("signal"), c.get("exit_code"), c.get("exception_type"),
                 frame_line(c["culprit"]) if c.get("culprit") else None]])
        out.write(_fence(c.get("worker_traceback") or c.get("message") or ""))
        out.write("\n")


def _environment(r: dict, out: TextIO) -> None:
    if "utilisation" in (r.get("plots") or []):
        out.write(f"## CPU and GPU use\n\n![CPU and GPU use](plots/utilisation.png)\n\nGPU: "
                  f"{_cell((r.get('environment') or {}).get('gpu_status'))}.\n\n")

    env = r.get("environment") or {}
    out.write("## Environment\n\n")
    _table(out, ["key", "value"], [[k, env.get(k)] for k in
           ("python", "torch", "platform", "cpu_count_effective", "cpu_affinity", "cpu_quota", "start_method_default",
            "shm_bytes_total", "memory_total_bytes", "cgroup_memory_limit_bytes", "open_files_limit", "gpu_status")])

    if r.get("mode") == "attach":
        return
    out.write("## How these numbers were measured\n\n")
    out.write("Each stage ran the target in a child process of its own. A hook on the DataLoader iterator's "
              "`__next__` timed the wait for each batch; compute is the time from a batch being handed over to "
              "the next request. On CUDA nothing is synchronized: CUDA events at each batch boundary and around the "
              "batch's copy to the device are read a few steps later. The first batch of each "
              f"iterator (worker start-up) and the first {r.get('options', {}).get('warmup', 3)} batches are "
              "excluded from the step statistics. A stage with no event for `--timeout` seconds is a hang.\n")


def _attach(r: dict, out: TextIO) -> None:
    if r.get("mode") == "attach":
        markdown_section(r, out)


SECTIONS = (_head, _findings, _recommendation, _baseline, _ranks, _attach, _sweep, _confirm, _transforms, _context, _loaders_and_stages, _failures, _environment)


def render(r: dict, out: TextIO) -> None:
    for section in SECTIONS:
        section(r, out)
