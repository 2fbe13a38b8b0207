"""Pure: from every process's stack to the one frame to look at."""

from __future__ import annotations

from loaderdoctor.frames import ProcessStack, ThreadStack, is_user_file

_WAITING_FOR_DATA = ("_next_data", "_get_data", "_try_get_data")


def user_frames(frames: list[dict]) -> list[dict]:
    return [f for f in frames if is_user_file(f.get("file"))]


def _in_dataloader_wait(frames: list[dict]) -> bool:
    for f in frames:
        name = (f.get("function") or "").rsplit(".", 1)[-1]
        if name in _WAITING_FOR_DATA and "dataloader" in (f.get("file") or ""):
            return True
    return False


def main_thread(ps: ProcessStack) -> ThreadStack | None:
    for t in ps.threads:
        if t.name in ("MainThread", "current"):
            return t
    return ps.threads[-1] if ps.threads else None


def own_frames(frames: list[dict]) -> list[dict]:
    """A worker's frames inside its own run: a forked worker's stack also shows the frames
    the parent had at fork (its <module>, its training loop), which it is not running."""
    for k, f in enumerate(frames):
        if (f.get("function") or "").endswith("_bootstrap") and "multiprocessing" in (f.get("file") or ""):
            return frames[:k]
    return frames


def find_culprit(stacks: list[ProcessStack]) -> dict | None:
    """Where the run is stuck. If the main thread waits inside the DataLoader, blame the
    worker sitting in user code; otherwise the main thread's innermost user frame."""
    main = next((p for p in stacks if p.role == "main"), None)
    main_t = main_thread(main) if main else None
    waiting = main_t is not None and _in_dataloader_wait(main_t.frames)
    if main_t is not None and not waiting:
        uf = user_frames(main_t.frames)
        if uf:
            return {"role": "main", "pid": main.pid, **_frame(uf[0])}
    for p in stacks:
        if p.role != "worker":
            continue
        for t in p.threads:
            uf = user_frames(own_frames(t.frames))
            if uf:
                return {"role": "worker", "pid": p.pid, **_frame(uf[0])}
    if main_t is not None:
        uf = user_frames(main_t.frames)
        if uf:
            return {"role": "main", "pid": main.pid, **_frame(uf[0])}
    return None


def _frame(f: dict) -> dict:
    return {"function": f.get("function"), "file": f.get("file"), "line": f.get("line")}
