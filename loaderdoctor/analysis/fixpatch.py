"""Pure: the fix as a patch, a unified diff of the user's DataLoader call that `git apply` takes.

The call is found with ast at the site hooks.call_site recorded ("train.py:9 < train.py:31",
innermost user frame first), and only that call's arguments change: an existing keyword
gets its new value, a missing one is added before the closing parenthesis in the call's
own layout (one line, or one argument a line with or without a trailing comma), comments
and everything else stay byte for byte. When the call passes `**kwargs`, missing settings
are merged into it (`**{**kwargs, "num_workers": 4}`): an explicit `num_workers=4` beside
`**kwargs` is valid syntax but raises TypeError when kwargs holds num_workers too.
The edited file is parsed again and the call's new arguments checked before a patch is
returned; nothing is written (the caller writes fix.patch).
"""

from __future__ import annotations

import ast
import difflib
import io
import os
import tokenize
from typing import Any

# torch.utils.data.DataLoader's parameters that may be passed by position, and their index
POSITIONAL = {"num_workers": 5, "pin_memory": 7, "multiprocessing_context": 11}


def parse_site(site: str | None) -> list[tuple[str, int]]:
    """"train.py:9 < train.py:31" -> [("train.py", 9), ("train.py", 31)], innermost first."""
    out = []
    for part in (site or "").split(" < "):
        path, _, line = part.strip().rpartition(":")
        if path and line.isdigit():
            out.append((path, int(line)))
    return out


def _read(path: str) -> str | None:
    """The file's text with its line endings kept (its coding cookie respected)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        enc, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        return raw.decode(enc)
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError):
        return None


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


class _Source:
    """Text with ast's (line, utf-8 byte column) positions mapped to string offsets."""

    def __init__(self, text: str):
        self.text = text
        self.lines = io.StringIO(text, newline="").readlines()
        self.starts = [0]
        for ln in self.lines:
            self.starts.append(self.starts[-1] + len(ln))

    def pos(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", "ignore"))

    def span(self, node: Any) -> tuple[int, int]:
        return self.pos(node.lineno, node.col_offset), self.pos(node.end_lineno, node.end_col_offset)

    def line_end(self, i: int) -> int:
        """Offset just past the line break of the line holding offset i."""
        j = self.text.find("\n", i)
        return len(self.text) if j < 0 else j + 1

    def eol(self, i: int) -> str:
        n = self.text.find("\n", i)
        return "\r\n" if n > 0 and self.text[n - 1] == "\r" else "\n"


def _find_call(tree: ast.AST, line: int) -> ast.Call | None:
    """The innermost call spanning `line` whose name ends with DataLoader, else the
    outermost call that starts on `line`."""
    spanning = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno <= line <= n.end_lineno]
    named = [n for n in spanning if _name(n.func).endswith("DataLoader")]
    if named:
        return min(named, key=lambda n: (-n.lineno, -n.col_offset, n.end_lineno, n.end_col_offset))
    starting = [n for n in spanning if n.lineno == line]
    if starting:
        return min(starting, key=lambda n: (n.col_offset, -n.end_lineno, -n.end_col_offset))
    return None


def _render(value: Any, quote: str) -> str:
    if isinstance(value, str) and quote == '"' and not any(c in value for c in "\"\\'") and value.isprintable():
        return f'"{value}"'
    return repr(value)


def _edits(src: _Source, call: ast.Call, settings: dict) -> list[tuple[int, int, str]] | None:
    """(start, end, new text) edits of the call for the settings; None when it cannot be
    patched safely."""
    quote = '"' if src.text.count('"') > src.text.count("'") else "'"
    kw = {k.arg: k for k in call.keywords if k.arg}
    stars = [k for k in call.keywords if k.arg is None]
    starred_at = next((i for i, a in enumerate(call.args) if isinstance(a, ast.Starred)), None)
    edits, missing = [], []
    for key, value in settings.items():
        if not key.isidentifier():
            raise ValueError(f"not an argument name: {key!r}")
        new, idx = _render(value, quote), POSITIONAL.get(key)
        positional = _name(call.func) == "DataLoader" and idx is not None
        if key in kw:
            node = kw[key].value
        elif positional and starred_at is not None and starred_at <= idx:
            return None  # *args may or may not reach this parameter
        elif positional and idx < len(call.args):
            node = call.args[idx]
        else:
            missing.append((key, new))
            continue
        s, e = src.span(node)
        if src.text[s:e] != new:
            edits.append((s, e, new))
    if not missing:
        return edits
    if stars:  # merge into the last **mapping
        node = stars[-1].value
        s, e = src.span(node)
        text = src.text[s:e]
        if not isinstance(node, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Dict)):
            text = f"({text})"
        items = ", ".join(f"{_render(k, quote)}: {v}" for k, v in missing)
        return edits + [(s, e, f"{{**{text}, {items}}}")]
    return edits + _insert(src, call, [f"{k}={v}" for k, v in missing])


def _insert(src: _Source, call: ast.Call, items: list[str]) -> list[tuple[int, int, str]]:
    """Edits adding `items` after the call's last argument, in the call's layout."""
    close = src.pos(call.end_lineno, call.end_col_offset) - 1
    args = list(call.args) + list(call.keywords)
    if not args:
        return [(close, close, ", ".join(items))]
    last = max(args, key=lambda a: (a.end_lineno, a.end_col_offset))
    last_end = src.pos(last.end_lineno, last.end_col_offset)
    comma, newline, i = None, False, last_end
    while i < close:  # between the last argument and ")": blanks, comments, a comma
        c = src.text[i]
        if c == "#":  # to the comment's line break, examined next
            i = src.line_end(i) - 1
            continue
        if c == ",":
            comma = i
        elif c == ")" and comma is None:  # closes a parenthesized last argument
            last_end, newline = i + 1, False
        elif c == "\n":
            newline = True
        i += 1
    if not newline:  # the call closes on the last argument's line
        if comma is not None:
            return [(comma + 1, comma + 1, " " + ", ".join(items) + ",")]
        return [(last_end, last_end, ", " + ", ".join(items))]
    start_line = src.lines[last.lineno - 1]
    indent = start_line[:len(start_line) - len(start_line.lstrip())]
    if last.lineno == call.lineno:
        indent += "    "
    if comma is not None:
        at, eol = src.line_end(comma), src.eol(comma)
        return [(at, at, "".join(f"{indent}{x},{eol}" for x in items))]
    at, eol = src.line_end(last_end), src.eol(last_end)
    body = "".join(f"{indent}{x}{',' if n < len(items) - 1 else ''}{eol}" for n, x in enumerate(items))
    return [(last_end, last_end, ","), (at, at, body)]


def _value_of(call: ast.Call, key: str) -> Any:
    """The literal the call passes for `key` (keyword, position or **{...}); KeyError if none."""
    for k in call.keywords:
        if k.arg == key:
            return ast.literal_eval(k.value)
    idx = POSITIONAL.get(key)
    if _name(call.func) == "DataLoader" and idx is not None and idx < len(call.args):
        return ast.literal_eval(call.args[idx])
    for k in reversed([k for k in call.keywords if k.arg is None and isinstance(k.value, ast.Dict)]):
        for dk, dv in zip(k.value.keys, k.value.values):
            if isinstance(dk, ast.Constant) and dk.value == key:
                return ast.literal_eval(dv)
    raise KeyError(key)


def _patch(path: str, line: int, settings: dict) -> tuple[str, str, tuple[int, int], tuple[int, int]] | None:
    """(old text, new text, the call's span in the old, in the new) or None."""
    settings = {k: v.item() if hasattr(v, "item") and not isinstance(v, str) else v  # numpy scalars
                for k, v in settings.items()}
    text = _read(path)
    if text is None:
        return None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    call = _find_call(tree, line)
    if call is None:
        return None
    src = _Source(text)
    edits = _edits(src, call, settings)
    if not edits:
        return None
    new = text
    for s, e, t in sorted(edits, key=lambda x: (x[0], x[1]), reverse=True):
        new = new[:s] + t + new[e:]
    start, end = src.span(call)
    new_end = end + sum(len(t) - (e - s) for s, e, t in edits)
    try:  # the edited call must parse and pass exactly the settings
        after = next(n for n in ast.walk(ast.parse(new)) if isinstance(n, ast.Call)
                     and (n.lineno, n.col_offset) == (call.lineno, call.col_offset))
        for k, v in settings.items():
            if _value_of(after, k) != v or type(_value_of(after, k)) is not type(v):
                return None
    except (SyntaxError, ValueError, StopIteration, KeyError):
        return None
    return text, new, (start, end), (start, new_end)


def patched_source(path: str, line: int, settings: dict) -> str | None:
    """The whole file with the call at `line` changed; None when it cannot be."""
    p = _patch(path, line, settings)
    return None if p is None else p[1]


def dataloader_patch(path: str, line: int, settings: dict, *, relto: str | None = None) -> str | None:
    """A unified diff (`--- a/REL` / `+++ b/REL`, REL relative to `relto`, default the file's
    folder) setting `settings` on the DataLoader call at path:line, for `git apply` run in
    `relto` (git prefixes the paths with the folder it runs in, inside a repository or not).
    None when the call cannot be found or patched, or nothing would change."""
    p = _patch(path, line, settings)
    if p is None:
        return None
    old, new = p[0], p[1]
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.path.abspath(relto) if relto else os.path.dirname(full)).replace(os.sep, "/")
    out = []
    for ln in difflib.unified_diff(_Source(old).lines, _Source(new).lines, f"a/{rel}", f"b/{rel}"):
        out.append(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n")
    return "".join(out)


def before_after(path: str, line: int, settings: dict) -> tuple[str, str] | None:
    """The call's own text before and after the change (for the report), or None."""
    p = _patch(path, line, settings)
    if p is None:
        return None
    old, new, (s, e), (s2, e2) = p
    return old[s:e], new[s2:e2]
