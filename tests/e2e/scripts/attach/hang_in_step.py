"""The main thread blocks in a function of the script's own, the loader is fine."""

import threading

import torch
from torch.utils.data import DataLoader, Dataset

from _common import LIFETIME, Progress, bounded_life


class Small(Dataset):
    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        return torch.zeros(4)


def sync_with_peers(lock):
    lock.acquire(timeout=LIFETIME)  # STEP HANG LINE


if __name__ == "__main__":
    bounded_life()
    progress = Progress()
    held = threading.Lock()
    held.acquire()
    loader = DataLoader(Small(), batch_size=4, num_workers=2)
    for step, batch in enumerate(loader, 1):
        progress.step(step)
        if step == 5:
            sync_with_peers(held)
