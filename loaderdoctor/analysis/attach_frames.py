"""attach, pure: what one stack says (a DataLoader wait, a worker, the pin-memory thread,
a collective, what the loop waits on). The rules are listed in analysis/attach.py."""

from __future__ import annotations

from loaderdoctor.analysis.culprits import _in_dataloader_wait
from loaderdoctor.frames import is_user_file


def _file(f: dict) -> str:
    return (f.get("file") or "").replace("\\", "/")


def _fn(f: dict) -> str:
    return (f.get("function") or "").rsplit(".", 1)[-1]


def _key(f: dict) -> tuple:
    return (f.get("function"), f.get("file"), f.get("line"))


def frame(f: dict) -> dict:
    return {"function": f.get("function"), "file": f.get("file"), "line": f.get("line")}


def is_torch_data(f: dict) -> bool:
    return "/torch/utils/data/" in _file(f)


def in_data_wait(frames: list[dict]) -> bool:
    """The loop thread is inside the DataLoader: waiting for a batch, or loading it itself."""
    return any(is_torch_data(f) for f in frames) or _in_dataloader_wait(frames)


def is_worker_stack(frames: list[dict]) -> bool:
    return any(_fn(f) == "_worker_loop" and _file(f).endswith("_utils/worker.py") for f in frames)


def is_pin_stack(frames: list[dict]) -> bool:
    return any(_fn(f) == "_pin_memory_loop" for f in frames)


def is_user(f: dict) -> bool:
    return is_user_file(f.get("file"))


def is_busy_worker_stack(own: list[dict]) -> bool:
    """A worker sample fetching a batch (dataset, transforms, collate), not idle on its index queue."""
    return any(_file(f).endswith("_utils/fetch.py") or is_user(f) for f in own)


def in_collective(frames: list[dict]) -> bool:
    return any("/torch/distributed/" in _file(f) for f in frames)


def _has(frames: list[dict], function: str) -> bool:
    return any(_fn(f) == function for f in frames)


def _local(frames: list[dict], function: str, name: str) -> int | None:
    for f in frames:
        if _fn(f) == function and name in (f.get("locals") or {}):
            try:
                return int(str(f["locals"][name]).strip())
            except ValueError:
                return None
    return None


_WAITS = (  # innermost library frame -> what the thread waits on
    (lambda f: _file(f).endswith(("/queue.py", "multiprocessing/queues.py")), "queue",
     "a queue (get/put that nothing answers)"),
    (lambda f: _file(f).endswith(("/threading.py", "multiprocessing/synchronize.py")), "lock",
     "a lock, condition or event"),
    (lambda f: _file(f).endswith(("multiprocessing/connection.py", "/selectors.py", "/socket.py", "/ssl.py",
                                  "/subprocess.py")), "io", "a pipe, socket or subprocess"),
    (lambda f: "/concurrent/futures/" in _file(f), "future", "a future (a thread or process pool)"),
)


def waiting_on(frames: list[dict]) -> dict:
    """What a blocked thread waits on, from its frames (innermost first)."""
    if in_data_wait(frames):
        f = next((f for f in frames if is_torch_data(f)), frames[0] if frames else {})
        return {"kind": "batch", "text": "a batch from the DataLoader", "frame": frame(f)}
    if in_collective(frames):
        f = next(f for f in frames if "/torch/distributed/" in _file(f))
        return {"kind": "collective", "text": "a torch.distributed collective (another rank has not joined)",
                "frame": frame(f)}
    for f in frames:
        if is_user(f):
            break
        for test, kind, text in _WAITS:
            if test(f):
                return {"kind": kind, "text": text, "frame": frame(f)}
    if frames and is_user(frames[0]):
        return {"kind": "call", "text": "a call made from your code that py-spy cannot see into (a C function: a "
                "lock's acquire, time.sleep, a native library)", "frame": frame(frames[0])}
    return {"kind": "other", "text": "the frame below", "frame": frame(frames[0]) if frames else None}
