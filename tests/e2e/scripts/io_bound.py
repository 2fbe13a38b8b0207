"""I/O-bound: every sample waits 10-15 ms on storage; num_workers=0 (the default)."""
import random
import time

import torch
from torch.utils.data import DataLoader, Dataset


class RemoteImages(Dataset):
    def __len__(self):
        return 100_000

    def __getitem__(self, i):
        time.sleep(random.uniform(0.010, 0.015))  # a read from network storage
        return torch.randn(3, 8, 8), i % 10


def main():
    loader = DataLoader(RemoteImages(), batch_size=16, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(10):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()


if __name__ == "__main__":
    main()
