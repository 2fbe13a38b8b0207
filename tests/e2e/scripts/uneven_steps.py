"""Uneven steps: every fifth step takes 60 ms (an evaluation hook, a logging flush), the rest
2 ms; the loader reads 4 ms per sample with 2 workers. A deeper prefetch queue carries the
loader over the slow steps."""
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Reads(Dataset):
    def __len__(self):
        return 4000

    def __getitem__(self, i):
        time.sleep(0.004)
        return torch.randn(8)


def main():
    w = torch.nn.Parameter(torch.zeros(8))
    opt = torch.optim.SGD([w], lr=0.01)
    for step, x in enumerate(DataLoader(Reads(), batch_size=4, num_workers=2)):
        opt.zero_grad()
        (x @ w).sum().backward()
        opt.step()
        time.sleep(0.06 if step % 5 == 0 else 0.002)


if __name__ == "__main__":
    main()
