"""Workload for benchmarks/gpu_check.py (d): a step whose batch copy to the GPU is large.

    python gpu_copy.py DEVICE BATCH SIZE

Each batch is BATCH float32 images of 3 x SIZE x SIZE from memory (num_workers=2,
pin_memory=False: pageable), copied with a plain blocking `.to(device)`, then a small conv
step. The copy is a large share of the step: loaderdoctor should time it (child/h2d.py), find
h2d-bound, and measure pinned copies in its pin-memory stage. Loops until stopped (or 10,000
batches).
"""
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class InMemory(Dataset):
    def __init__(self, n, size):
        self.n = n
        self.image = torch.rand(3, size, size)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.image.clone(), i % 10


if __name__ == "__main__":
    device, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(InMemory(10_000 * batch, size), batch_size=batch, num_workers=2, pin_memory=False)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
