"""Slow data, fast step: the main thread waits for batches most of the time."""

import time

import torch
from torch.utils.data import DataLoader, Dataset

from _common import Progress, bounded_life


class Sleepy(Dataset):
    def __len__(self):
        return 1_000_000

    def __getitem__(self, i):
        time.sleep(0.02)  # SLOW READ LINE
        return torch.zeros(4)


if __name__ == "__main__":
    bounded_life()
    progress = Progress()
    loader = DataLoader(Sleepy(), batch_size=4, num_workers=2)
    for step, batch in enumerate(loader, 1):
        (batch * 2).sum()
        progress.step(step)
