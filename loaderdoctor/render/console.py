"""The terminal view of a probe (rich): short by default, events with --verbose."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape

from loaderdoctor.render.text import VERDICT_TEXT, ms, pct
from loaderdoctor.textsafe import clean


class ProbeView:
    def __init__(self, console: Console, quiet: bool = False, verbose: bool = False):
        self.c = console
        self.c.soft_wrap = True
        self.quiet = quiet
        self.verbose = verbose

    def start(self, target) -> None:
        if not self.quiet:
            label = "the bundled demo" if target.kind == "demo" else target.path
            self.c.print(f"loaderdoctor: probing {escape(label)}")

    def on_stage(self, name: str, res) -> None:
        if self.quiet:
            return
        if res is None:
            self.c.print(f"  stage {escape(name)} ...")
        else:
            self.c.print(f"  stage {escape(name)}: {res.status} in {res.seconds:.1f} s "
                         f"({escape(clean(res.detail))})")

    def on_event(self, ev: dict) -> None:
        self.c.print(escape(json.dumps(ev)), style="dim")

    def summary(self, report: dict, paths: dict) -> None:
        v = report.get("verdict")
        b = report.get("baseline") or {}
        self.c.print(f"[bold]Verdict: {escape(str(v))}[/] ({VERDICT_TEXT.get(v, '')})"
                     + (f"; {escape(report['headline'])}" if report.get("headline") else ""))
        if b.get("steps"):
            self.c.print(f"  baseline: {b['steps']} steps, {b.get('samples_per_s')} samples/s, data wait "
                         f"{pct(b.get('data_wait_fraction'))}, first batch {ms(b.get('first_batch_s'))}")
        if not self.quiet:
            for f in report.get("findings") or []:
                self.c.print(f"  \\[{escape(f['severity'])}] {escape(f['title'])} ({escape(f['id'])})")
                if self.verbose:
                    self.c.print(f"      evidence: {escape(f['evidence'])}")
                self.c.print(f"      fix: {escape(f['fix'])}")
        for fmt in ("html", "md", "json"):
            if fmt in paths:
                self.c.print(f"Wrote {escape(paths[fmt])}")
        if "html" in paths:
            self.c.print(f"Open it: xdg-open {escape(paths['html'])}   (re-render: loaderdoctor report "
                         f"{escape(paths.get('json', 'report.json'))} --format md)")
