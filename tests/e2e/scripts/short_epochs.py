"""A reproducer from a torch issue: 50 items that take 0.1 s each, batch 8, 4 workers. With
4 workers x prefetch 2 most of each 7-batch epoch arrives with its first batch, so a
steady-state rate (first batch excluded) says nothing about the epoch the user waits for."""
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Slow(Dataset):
    def __len__(self):
        return 50

    def __getitem__(self, i):
        time.sleep(0.1)
        return torch.zeros(4)


def main():
    loader = DataLoader(Slow(), batch_size=8, num_workers=4)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=0.1)
    for epoch in range(30):
        for x in loader:
            opt.zero_grad()
            (x @ w).sum().backward()
            opt.step()


if __name__ == "__main__":
    main()
