"""Benchmark workload: trains slowly, forever, with 4 workers (low CPU: the samples sleep)."""
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Slow(Dataset):
    def __len__(self):
        return 10**7

    def __getitem__(self, i):
        time.sleep(0.02)
        return torch.zeros(16)


if __name__ == "__main__":
    model = torch.nn.Linear(16, 1)
    for x in DataLoader(Slow(), batch_size=8, num_workers=4):
        model(x).sum().backward()
