"""assert_loader_healthy in a user's own test: fails with the culprit instead of hanging."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from loaderdoctor import LoaderUnhealthy, assert_loader_healthy

pytestmark = pytest.mark.shares_machine

HERE = os.path.dirname(os.path.abspath(__file__))


class Stuck(Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):
        if i == 9:
            threading.Event().wait()
        return torch.zeros(2)


class Fine(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.full((2,), float(i))


def _workers_alive() -> list:
    import psutil

    return [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(autouse=True)
def _no_worker_left():
    """Every check ends the workers it started, however it ended (not left to the garbage
    collector: an error's traceback keeps the iterator alive)."""
    before = {p.pid for p in _workers_alive()}
    yield
    left = [p for p in _workers_alive() if p.pid not in before]
    assert not left, [(p.pid, p.name()) for p in left]


def test_healthy_loader_passes():
    assert assert_loader_healthy(DataLoader(Fine(), batch_size=4, num_workers=2), batches=5, timeout=30) == 5


def test_stuck_worker_fails_fast_with_the_culprit():
    loader = DataLoader(Stuck(), batch_size=2, num_workers=2)
    t = time.monotonic()
    with pytest.raises(LoaderUnhealthy) as info:
        assert_loader_healthy(loader, batches=10, timeout=3)
    assert time.monotonic() - t < 3 + 15
    c = info.value.culprit
    assert c["role"] == "worker" and c["function"].endswith("__getitem__") and c["file"] == __file__
    assert "Culprit:" in str(info.value) and "worker pid" in str(info.value)
    assert loader.worker_init_fn is None  # restored


class Raising(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        raise ValueError(f"bad sample {i}")


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_exception_is_reported(workers):
    with pytest.raises(LoaderUnhealthy, match="ValueError") as info:
        assert_loader_healthy(DataLoader(Raising(), batch_size=2, num_workers=workers), batches=3, timeout=10)
    assert "bad sample 0" in str(info.value) and "after 0 batches" in str(info.value)


def test_no_worker_survives_a_stuck_check(tmp_path):
    code = textwrap.dedent(f"""
        import sys, threading, torch
        sys.path.insert(0, {HERE!r})
        from torch.utils.data import DataLoader
        from test_inprocess import Stuck
        from loaderdoctor import assert_loader_healthy, LoaderUnhealthy
        import psutil
        try:
            assert_loader_healthy(DataLoader(Stuck(), batch_size=2, num_workers=2), batches=10, timeout=2)
        except LoaderUnhealthy:
            alive = [c for c in psutil.Process().children(recursive=True) if c.status() != "zombie"]
            print("ALIVE", len(alive))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ALIVE 0" in out.stdout, out.stdout + out.stderr
