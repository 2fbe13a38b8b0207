"""Secrets in the script's arguments never reach a file loaderdoctor writes.

What is redacted (each value is written as `***`):

1. The value of an option whose name looks secret: `--api-key X`, `--api-key=X`,
   `--wandb_token X`, `-token X`. A name looks secret when one of its parts (split on
   `-`, `_` and `.`, case ignored) is, or ends with, one of SECRET_WORDS ("key",
   "token", "secret", "password", "passwd", "auth", "credential"), or starts with
   "auth", or is the plural "secrets", "passwords", "credentials". So `--apikey`,
   `--hf-token`, `--db_password`, `--oauth`, `--authorization`, `--credentials-file` are
   secret; `--tokenizer`, `--max-tokens`, `--keypoints`, `--passes`, `-p` are not. Note that
   `--image-key`, `--sort-key` are (their values show as `***`).
2. The value of an option named with `--redact NAME` (`extra_names`; "hf-home",
   "--hf-home" and "HF_HOME" all name `--hf-home`/`--hf_home`).
3. `KEY=VALUE` arguments (environment-style or Hydra overrides, an optional leading `+`,
   `++` or `~` allowed) whose KEY looks secret by the same rule or is in `extra_names`:
   `HF_TOKEN=X`, `wandb.api_key=X`, `+db.password=X`.
4. The password of credentials in a URL, anywhere in any argument or text:
   `https://user:PASS@host` -> `https://user:***@host` (the user name is kept), and query
   parameters whose name looks secret: `?token=X&page=2` -> `?token=***&page=2`.
5. In free text (messages, stderr tails, stacks: `redact_text`, `redact_tree`) every value
   found by 1-4 that is at least 4 characters long, wherever it appears, and 4. again.
   Shorter values are masked in the argument list only, so that masking "ab" does not
   mangle every word holding "ab".

An option with no value (the next argument starts with "-", or there is none) is left
alone. Redaction changes only what loaderdoctor records: the script itself still gets its
real arguments. Use: `argv, secrets = redact_argv(args, extra_names)` once, record `argv`,
and pass `secrets` to `redact_text`/`redact_tree` for every other text that is written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from loaderdoctor.textsafe import clean

__all__ = [
    "MASK",
    "MIN_TEXT_SECRET",
    "SECRET_WORDS",
    "looks_secret",
    "redact_argv",
    "redact_text",
    "redact_tree",
]

SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "auth", "credential")
MASK = "***"
MIN_TEXT_SECRET = 4  # shorter values are not replaced in free text

_PARTS = re.compile(r"[-_.]+")
_KEY_VALUE = re.compile(r"^(\+{0,2}|~)([A-Za-z_][A-Za-z0-9_.\-]*)=(.+)$", re.DOTALL)
# scheme://user:PASSWORD@  (the user may be empty; the password may hold ":", not "@" or "/").
_URL_CREDS = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*:)([^\s/@]+)(@)")
_QUERY = re.compile(r"([?&;]([A-Za-z0-9_.\-]+)=)([^&#\s]+)")


def _norm(name: str) -> str:
    return name.lstrip("-+~").lower().replace("_", "-")


def looks_secret(name: str, extra_names: Iterable[str] = ()) -> bool:
    """Whether an option or KEY name looks like it holds a secret (rules 1-3 above)."""
    n = _norm(name)
    if not n:
        return False
    if n in {_norm(e) for e in extra_names}:
        return True
    for part in _PARTS.split(n):
        if part.startswith("auth") or part in ("secrets", "passwords", "credentials"):
            return True
        if any(part.endswith(w) for w in SECRET_WORDS):
            return True
    return False


def _mask_urls(text: str, found: list[str] | None = None) -> str:
    def creds(m: re.Match) -> str:
        if found is not None:
            found.append(m.group(2))
        return m.group(1) + MASK + m.group(3)

    def query(m: re.Match) -> str:
        if not looks_secret(m.group(2)):
            return m.group()
        if found is not None:
            found.append(m.group(3))
        return m.group(1) + MASK

    if "://" in text:
        text = _URL_CREDS.sub(creds, text)
    if "=" in text:
        text = _QUERY.sub(query, text)
    return text


def redact_argv(argv: Iterable[str], extra_names: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(argv with secret values as "***", the secret values found, in order, without repeats)."""
    argv, extra = list(argv), tuple(extra_names)
    out: list[str] = []
    found: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and arg != "--":
            name, eq, value = arg.partition("=")
            if looks_secret(name, extra):
                if eq and value:
                    found.append(value)
                    arg = f"{name}={MASK}"
                elif not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    found.append(argv[i + 1])
                    out.append(arg)
                    out.append(MASK)
                    i += 2
                    continue
        else:
            m = _KEY_VALUE.match(arg)
            if m and looks_secret(m.group(2), extra):
                found.append(m.group(3))
                arg = f"{m.group(1)}{m.group(2)}={MASK}"
        out.append(_mask_urls(arg, found))
        i += 1
    secrets = list(dict.fromkeys(v for v in found if v))
    # A secret value repeated in another argument (e.g. inside a URL or a header) goes too.
    return [a if a == MASK else redact_text(a, secrets) for a in out], secrets


@functools.lru_cache(maxsize=16)
def _pattern(values: tuple[str, ...]) -> re.Pattern | None:
    variants = {v for s in values for v in (s, clean(s)) if len(v) >= MIN_TEXT_SECRET}
    if not variants:
        return None
    # Longest first, so a secret that holds a shorter one is replaced whole.
    return re.compile("|".join(re.escape(v) for v in sorted(variants, key=lambda v: (-len(v), v))))


def redact_text(text: str, secret_values: Iterable[str]) -> str:
    """`text` with every known secret value (of 4 characters or more) and every URL
    password or secret-named query value replaced by "***"."""
    if not isinstance(text, str) or not text:
        return text
    pat = _pattern(tuple(sorted(set(secret_values))))
    if pat is not None:
        text = pat.sub(MASK, text)
    return _mask_urls(text)


def redact_tree(obj, secret_values: Iterable[str]):
    """A new JSON-like tree (dict/list/tuple) with `redact_text` applied to every str, keys too."""
    secrets = tuple(sorted(set(secret_values)))

    def walk(o):
        if isinstance(o, str):
            return redact_text(o, secrets)
        if isinstance(o, dict):
            return {walk(k): walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if isinstance(o, tuple):
            return tuple(walk(v) for v in o)
        return o

    return walk(obj)
