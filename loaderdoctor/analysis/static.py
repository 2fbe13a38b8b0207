"""What the script's source says, without running it (parent side)."""

from __future__ import annotations

import ast


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If):
        return False
    t = node.test
    if isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq):
        names = [t.left, *t.comparators]
        has_name = any(isinstance(n, ast.Name) and n.id == "__name__" for n in names)
        has_main = any(isinstance(n, ast.Constant) and n.value == "__main__" for n in names)
        return has_name and has_main
    return False


_TOP_LEVEL_WORK = (ast.For, ast.While, ast.With, ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign)


def main_guard(source: str) -> dict:
    """{has_guard, guard_line, toplevel_calls: [lines of module-level statements that call
    something, outside any guard]}. Under spawn/forkserver a worker re-runs all of those."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {"has_guard": None, "guard_line": None, "toplevel_calls": []}
    guard = next((n for n in tree.body if _is_main_guard(n)), None)
    calls = []
    for node in tree.body:
        if isinstance(node, _TOP_LEVEL_WORK) and any(isinstance(x, ast.Call) for x in ast.walk(node)):
            calls.append(node.lineno)
    return {"has_guard": guard is not None, "guard_line": guard.lineno if guard else None,
            "toplevel_calls": calls}
