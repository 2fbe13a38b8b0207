"""The package's one-way structure (ARCHITECTURE.md): each part imports only what it may,
no import cycle anywhere, no module over 450 lines, no function over 80 lines without a
reason in its docstring. Reads the source; imports nothing of loaderdoctor."""

from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "loaderdoctor")
SHARED = {"errors", "protocol", "frames", "session", "textsafe", "lifeline", "redact", "__init__"}

# part -> the parts it may import (besides itself). "shared" is SHARED at the top.
ALLOWED = {
    "child": {"shared-child"},
    "observe": {"shared"},
    "analysis": {"shared"},
    "render": {"shared-render"},
    "orchestrate": {"shared", "child-spec", "observe", "analysis", "render"},
    "shared": {"shared"},
}
CHILD_SHARED = {"errors", "protocol", "frames", "textsafe", "lifeline"}  # the child never needs the session
RENDER_SHARED = {"errors", "protocol", "frames", "textsafe", "redact"}


def _modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__") if rel.endswith(".__init__") else rel] = path
    return out


def _imports(path: str, modname: str, known: set[str]) -> set[str]:
    """Every loaderdoctor module this file imports, at any depth (function-level too)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    pkg = modname if path.endswith("__init__.py") else modname.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for n in names:
            if n.startswith("loaderdoctor"):
                while n not in known and "." in n:
                    n = n.rpartition(".")[0]
                if n in known and n != modname:
                    found.add(n)
    return found


def _part(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return "top"
    if parts[1] in ALLOWED:
        return parts[1]
    return "shared" if parts[1] in SHARED else parts[1]  # cli, live, demo, __main__: the outer layer


def _may_import(src: str, dst: str) -> bool:
    sp, dp = _part(src), _part(dst)
    if sp == dp:
        return True
    dname = dst.split(".")[1] if "." in dst else dst
    if dp == "top":  # the package itself (__version__)
        return True
    if sp == "child":
        return dp == "shared" and dname in CHILD_SHARED
    if sp == "render":
        return dp == "shared" and dname in RENDER_SHARED
    if sp in ("observe", "analysis", "shared"):
        return dp == "shared"
    if sp == "orchestrate":
        # the parent starts children and reads their spec, never runs child code itself
        return dp in ("shared", "observe", "analysis", "render")
    return True  # cli, live, __main__: the outermost layer


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, m, known) for m, p in mods.items()}


def test_no_forbidden_arrow():
    bad = [f"{src} -> {dst}" for src, dsts in _graph().items() for dst in dsts if not _may_import(src, dst)]
    assert not bad, "imports against ARCHITECTURE.md:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()
    # package __init__ re-exporting its own modules is not a cycle between parts
    graph = {m: {d for d in ds if not (m.startswith(d + ".") or d.startswith(m + "."))} for m, ds in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_module_and_function_sizes():
    too_long = []
    for mod, path in _modules().items():
        text = open(path, encoding="utf-8").read()
        n = text.count("\n")
        if n > 450:
            too_long.append(f"{mod}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if length > 80 and "Long because" not in doc:
                    too_long.append(f"{mod}.{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


def test_the_checker_sees_a_forbidden_arrow():
    """The rules above are not vacuous: these arrows would be refused."""
    assert not _may_import("loaderdoctor.child.recorder", "loaderdoctor.analysis.stepstats")
    assert not _may_import("loaderdoctor.analysis.report", "loaderdoctor.observe.sampling")
    assert not _may_import("loaderdoctor.render.html", "loaderdoctor.analysis.report")
    assert not _may_import("loaderdoctor.orchestrate.probe", "loaderdoctor.child.recorder")
    assert not _may_import("loaderdoctor.child.recorder", "loaderdoctor.session")
    assert _may_import("loaderdoctor.orchestrate.probe", "loaderdoctor.analysis.report")
    assert _may_import("loaderdoctor.child.recorder", "loaderdoctor.protocol")
