"""Which part of a DataLoader cannot cross to a spawn/forkserver worker: the first
attribute path (e.g. `dataset.transform.transforms[2]`) whose pickling fails."""

from __future__ import annotations

from multiprocessing.reduction import ForkingPickler
from typing import Any, Iterator


def _fails(obj: Any) -> str | None:
    try:
        ForkingPickler.dumps(obj)
        return None
    except Exception as exc:  # PicklingError, AttributeError("Can't pickle local object"), TypeError...
        return f"{type(exc).__name__}: {exc}"


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in list(obj.items())[:200]:
            yield f"[{k!r}]", v
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj[:200]):
            yield f"[{i}]", v
    else:
        d = getattr(obj, "__dict__", None)
        if isinstance(d, dict):
            for k, v in list(d.items())[:200]:
                yield f".{k}", v
        for k in getattr(type(obj), "__slots__", ()) or ():
            if isinstance(k, str) and hasattr(obj, k):
                yield f".{k}", getattr(obj, k)


def first_unpicklable(parts: dict[str, Any], max_depth: int = 10) -> dict | None:
    """{path, error, type} of the deepest unpicklable attribute under the first failing
    part, or None when everything pickles."""
    for name, obj in parts.items():
        if obj is None or _fails(obj) is None:
            continue
        path, cur, err = name, obj, _fails(obj)
        for _ in range(max_depth):
            for suffix, child in _children(cur):
                child_err = _fails(child)
                if child_err is not None:
                    path, cur, err = path + suffix, child, child_err
                    break
            else:
                break
        return {"path": path, "error": err, "type": type(cur).__name__}
    return None
