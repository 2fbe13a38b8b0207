"""Shared by the attach test scripts: a progress file, and a bounded life (no orphan survives
a test that forgot to end its target)."""

import os
import sys
import threading
import time

LIFETIME = float(os.environ.get("ATTACH_TARGET_LIFETIME", "120"))


def progress_file() -> str:
    return sys.argv[1]


def bounded_life() -> None:
    def stop():
        time.sleep(LIFETIME)
        os._exit(0)

    threading.Thread(target=stop, name="lifetime", daemon=True).start()


class Progress:
    def __init__(self):
        self.f = open(progress_file(), "a", buffering=1)

    def step(self, n: int) -> None:
        self.f.write(f"{n}\n")
