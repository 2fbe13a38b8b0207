"""Reading a DataLoader and its batches without changing them: configuration, call site,
samples and bytes per batch, native thread pools; and applying constructor overrides."""

from __future__ import annotations

import os
import sys
from typing import Any

from loaderdoctor.child.worker import ChainedWorkerInit
from loaderdoctor.frames import is_user_file, short_path


def count_samples(batch: Any, default: int = 1) -> int:
    """Samples in a batch: the leading dimension of the first tensor found."""
    for _ in range(8):
        shape = getattr(batch, "shape", None)
        if shape is not None:
            return int(shape[0]) if len(shape) else default
        if isinstance(batch, (list, tuple)):
            if not batch:
                return default
            batch = batch[0]
        elif isinstance(batch, dict):
            if not batch:
                return default
            batch = next(iter(batch.values()))
        else:
            return default
    return default


def batch_bytes(batch: Any, limit: int = 10_000) -> tuple[int, int]:
    """(bytes, tensors) in a batch: what crosses /dev/shm per batch from a worker."""
    total = count = 0
    stack = [batch]
    while stack and count < limit:
        x = stack.pop()
        nbytes = getattr(x, "nbytes", None)
        if nbytes is not None and hasattr(x, "shape"):
            total += int(nbytes)
            count += 1
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
    return total, count


_POOL_LIBS = ("libgomp", "libiomp", "libomp", "libopenblas", "libmkl_rt", "cv2", "libtbb")


def native_thread_pools() -> list[str]:
    """Native libraries with thread pools mapped in this process (fork-unsafe when their
    threads are running at fork): read once per iterator that starts workers."""
    found = set()
    try:
        with open(f"/proc/{os.getpid()}/maps") as f:
            for line in f:
                path = line.rsplit(" ", 1)[-1].strip()
                base = os.path.basename(path)
                for lib in _POOL_LIBS:
                    if base.startswith(lib):
                        found.add(base.split(".so")[0])
    except OSError:
        pass
    return sorted(found)


def call_site(depth: int = 2, chain: int = 3) -> str:
    """Where a loader was constructed: the innermost user frames, innermost first, e.g.
    "train.py:9 < train.py:31". The chain tells apart train and validation loaders that
    one helper function builds."""
    return construction(depth + 1, chain)[0]


_OWN = ("torch" + os.sep, "loaderdoctor" + os.sep)


def construction(depth: int = 2, chain: int = 3, libs: int = 6) -> tuple[str, str, str | None]:
    """(site, via, origin): the innermost user frames, innermost first ("train.py:9 < train.py:31"),
    and the library functions between them and the constructor, innermost first
    ("accelerate/data_loader.py:prepare_data_loader < transformers/trainer.py:get_train_dataloader"):
    a framework that builds the train and the eval loader from one user line (trainer.train())
    still builds them in different functions. origin is the innermost user frame as an
    absolute "path:line" (the DataLoader call a fix.patch edits)."""
    f = sys._getframe(depth)
    found: list[str] = []
    origin = None
    via: list[str] = []
    outermost = None
    while f is not None and len(found) < chain:
        code = f.f_code
        fn = code.co_filename
        if is_user_file(fn):
            if origin is None:
                origin = f"{os.path.abspath(fn)}:{f.f_lineno}"
            found.append(f"{short_path(fn)}:{f.f_lineno}")
        elif not found and len(via) < libs and code.co_name != "__init__" and not fn.startswith("<"):
            tail = fn.replace(os.sep + "__init__.py", "").split("site-packages" + os.sep)[-1]
            if not tail.startswith(_OWN):
                via.append(f"{tail}:{code.co_name}")
        outermost = f
        f = f.f_back
    if found:
        return " < ".join(found), " < ".join(via), origin
    if outermost is not None:
        return f"{short_path(outermost.f_code.co_filename)}:{outermost.f_lineno}", " < ".join(via), origin
    return "?", " < ".join(via), origin


def dataset_tag(dataset: Any) -> str:
    """What tells apart two loaders built at one place: their dataset's class and length
    (the same across epochs that re-create the loader, different for train and eval)."""
    try:
        n = len(dataset)
    except Exception:
        n = None
    return f"{type(dataset).__qualname__}/{n}"


def _describe(obj: Any) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
        t = obj
    else:
        t = type(obj)
    return f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', repr(t))}"


def loader_config(loader: Any) -> dict:
    ds = loader.dataset
    try:
        length = len(ds)
    except Exception:  # IterableDataset without __len__, or a broken __len__
        length = None
    ctx = loader.multiprocessing_context
    if loader.num_workers == 0:
        method = None
    elif ctx is None:
        import multiprocessing

        method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_context().get_start_method()
    else:
        method = ctx.get_start_method() if hasattr(ctx, "get_start_method") else str(ctx)
    wif = loader.worker_init_fn
    if isinstance(wif, ChainedWorkerInit):
        wif = wif.user_fn
    return {
        "loader_class": _describe(type(loader)),
        "dataset": _describe(type(ds)),
        "dataset_len": length,
        "num_workers": loader.num_workers,
        "batch_size": loader.batch_size,
        "drop_last": loader.drop_last,
        "pin_memory": bool(loader.pin_memory),
        "persistent_workers": bool(loader.persistent_workers),
        "prefetch_factor": loader.prefetch_factor,
        "start_method": method,
        "timeout": loader.timeout,
        "collate_fn": _describe(loader.collate_fn),
        "sampler": _describe(type(loader.sampler)) if loader.sampler is not None else None,
        "batch_sampler": _describe(type(loader.batch_sampler)) if loader.batch_sampler is not None else None,
        "worker_init_fn": _describe(wif),
    }


def apply_overrides(arguments: dict, overrides: dict) -> None:
    """Change DataLoader constructor arguments in place, keeping the combination valid."""
    arguments.update(overrides)
    if arguments.get("num_workers", 0) == 0:
        # torch rejects these with num_workers=0
        arguments["persistent_workers"] = False
        arguments["prefetch_factor"] = None
        arguments["multiprocessing_context"] = None
        arguments["timeout"] = 0
