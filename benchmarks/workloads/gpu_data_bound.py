"""Workload for benchmarks/gpu_check.py (b): a data-bound loop with a known data time.

    python gpu_data_bound.py DEVICE SLEEP_PER_ITEM_S BATCH

Each item sleeps SLEEP_PER_ITEM_S (num_workers=0, so the main process waits the whole
BATCH x SLEEP_PER_ITEM_S for every batch), then a small conv step runs on DEVICE. Loops
until loaderdoctor stops it (or 10,000 batches).
"""
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Sleepy(Dataset):
    def __init__(self, n, sleep_s):
        self.n = n
        self.sleep_s = sleep_s

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.sleep_s)
        return torch.zeros(3, 32, 32), i % 10


if __name__ == "__main__":
    device, sleep_s, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in DataLoader(Sleepy(10_000 * batch, sleep_s), batch_size=batch, num_workers=0):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
