"""Shared by the distributed test scripts: gloo process group, a tiny DDP model, a loop."""

import os
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset


class SleepyDataset(Dataset):
    """Each sample costs `sleep_s` (a slow read); `block` never returns (a stuck read)."""

    def __init__(self, n=4000, sleep_s=0.0, block=False):
        self.n, self.sleep_s, self.block = n, sleep_s, block

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.block:
            read_blob(i)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return torch.full((8,), float(i % 7)), torch.tensor(float(i % 3))


def read_blob(i):
    while True:  # a read that never returns (a dead mount, a lock never released)
        time.sleep(3600)


def setup():
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    return dist.get_rank(), dist.get_world_size()


def train(loader, epochs=100):
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
    dist.destroy_process_group()


def env_rank():
    return int(os.environ.get("RANK", "0"))
