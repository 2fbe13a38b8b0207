"""A worker deadlock: __getitem__ blocks on an Event nobody sets after a few batches."""

import threading

import torch
from torch.utils.data import DataLoader, Dataset

from _common import LIFETIME, Progress, bounded_life


class Blocking(Dataset):
    def __init__(self):
        self.never_set = threading.Event()

    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        if i >= 16:
            self.never_set.wait(LIFETIME)  # DEADLOCK LINE
        return torch.zeros(4)


if __name__ == "__main__":
    bounded_life()
    progress = Progress()
    loader = DataLoader(Blocking(), batch_size=4, num_workers=2)
    for step, batch in enumerate(loader, 1):
        progress.step(step)
