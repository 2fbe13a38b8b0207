"""Copy-on-read: a Dataset holding a big Python list of dicts, read by fork workers. Every
access writes the items' reference counts, so each worker copies the list's pages it touches
and its private memory grows batch after batch. `--numpy` holds the same data in numpy
arrays (the fix): the workers' memory stays flat."""
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

N = 600_000  # ~800 samples an epoch: each worker lives ~2 s, long enough for its growth to show
WINDOW = 3000  # items each sample reads (a lookup over its neighbours)
STRIDE = 750


class Records(Dataset):
    def __init__(self):
        self.items = [{"id": i, "path": f"/data/img_{i:07d}.jpg", "label": i % 10} for i in range(N)]

    def __len__(self):
        return (N - WINDOW) // STRIDE

    def __getitem__(self, i):
        lo = i * STRIDE
        s = sum(self.items[j]["label"] for j in range(lo, lo + WINDOW))
        time.sleep(0.004)
        return torch.tensor([float(s)])


class Arrays(Dataset):
    def __init__(self):
        self.labels = np.arange(N, dtype=np.int64) % 10

    def __len__(self):
        return (N - WINDOW) // STRIDE

    def __getitem__(self, i):
        lo = i * STRIDE
        s = int(self.labels[lo:lo + WINDOW].sum())
        time.sleep(0.004)
        return torch.tensor([float(s)])


if __name__ == "__main__":
    ds = Arrays() if "--numpy" in sys.argv else Records()
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.01)
    for epoch in range(100):
        for x in loader:
            opt.zero_grad()
            (x * w).sum().backward()
            opt.step()
