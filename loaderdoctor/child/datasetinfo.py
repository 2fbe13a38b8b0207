"""The "ds" event: once per loader, at its first iterator, what its dataset holds that forked
workers copy page by page when they touch it (copy-on-read: every access writes the Python
objects' reference counts, and a garbage-collector pass writes their headers).

One pass over vars(dataset) (and vars of a wrapped `.dataset`, one level): the attributes
that are large Python containers (list, tuple, dict, set, or a numpy array of dtype object),
with their length and a size estimate from sys.getsizeof of the container and of a sample of
its items (each item one level deep). Cheap: a bounded sample, whatever the length.

Also whether the installed DataLoader accepts `in_order` (torch >= 2.6), for slow-worker."""

from __future__ import annotations

import inspect
import sys
from typing import Any

MIN_LEN = 10_000  # a container shorter than this is not worth naming
SAMPLE = 32  # items sized per container
CHILDREN = 16  # an item's children sized (a dict's values, a list's items)
_CONTAINERS = (list, tuple, dict, set, frozenset)


def _item_size(x: Any) -> tuple[int, int]:
    """(bytes, Python objects) of one item and its direct children (a bounded look)."""
    size, objects = sys.getsizeof(x), 1
    if isinstance(x, dict):
        children = [c for c, _ in zip(x.values(), range(CHILDREN))]  # keys are mostly shared strings
        scale = max(1.0, len(x) / max(1, len(children)))
    elif isinstance(x, (list, tuple, set, frozenset)):
        children = [c for c, _ in zip(x, range(CHILDREN))]
        scale = max(1.0, len(x) / max(1, len(children)))
    else:
        return size, objects
    csize = sum(sys.getsizeof(c) for c in children)
    return size + int(csize * scale), objects + int(len(children) * scale)


def container_info(name: str, v: Any) -> dict | None:
    """Length and estimated size of a large Python container, or None."""
    is_obj_array = getattr(getattr(v, "dtype", None), "kind", None) == "O" and hasattr(v, "shape")
    if not isinstance(v, _CONTAINERS) and not is_obj_array:
        return None
    try:
        n = len(v)
    except Exception:
        return None
    if n < MIN_LEN:
        return None
    if isinstance(v, dict):
        items = [v[k] for k, _ in zip(v, range(SAMPLE))]
    elif isinstance(v, (set, frozenset)):
        items = [x for x, _ in zip(v, range(SAMPLE))]
    else:
        step = max(1, n // SAMPLE)
        items = [v[k] for k in range(0, n, step)][:SAMPLE]
    per = [_item_size(x) for x in items] or [(0, 0)]
    mean_b = sum(b for b, _ in per) / len(per)
    mean_o = sum(o for _, o in per) / len(per)
    own = sys.getsizeof(v) if not is_obj_array else int(getattr(v, "nbytes", 0))
    kind = "ndarray[object]" if is_obj_array else type(v).__name__
    return {"attr": name, "type": kind, "len": n, "mb": round((own + mean_b * n) / 2**20, 1),
            "objects": int(n * mean_o)}


def python_containers(dataset: Any) -> list[dict]:
    """The dataset's large Python containers (and its wrapped dataset's, one level down)."""
    out: list[dict] = []
    seen: set[int] = set()
    for prefix, obj in (("", dataset), ("dataset.", getattr(dataset, "dataset", None))):
        try:
            attrs = vars(obj) if obj is not None else {}
        except TypeError:
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for name, v in list(attrs.items()):
            info = container_info(prefix + name, v)
            if info is not None:
                out.append(info)
    out.sort(key=lambda d: -d["mb"])
    return out[:8]


def in_order_support(loader: Any) -> dict:
    """Does this torch's DataLoader take `in_order`, and what is it set to."""
    try:
        from torch.utils.data import DataLoader

        init = getattr(DataLoader.__init__, "__wrapped__", DataLoader.__init__)
        supported = "in_order" in inspect.signature(init).parameters
    except (ImportError, TypeError, ValueError):
        supported = False
    return {"supported": supported, "value": getattr(loader, "in_order", None) if supported else None}


def describe_event(loader: Any, idx: int) -> dict:
    """The "ds" event for a loader: never raises (a description must not break the loader)."""
    ev: dict = {"e": "ds", "l": idx}
    try:
        from torch.utils.data import IterableDataset

        ds = loader.dataset
        ev["iterable"] = isinstance(ds, IterableDataset)
        ev["containers"] = python_containers(ds)
        ev["in_order"] = in_order_support(loader)
    except Exception as exc:
        ev["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return ev
