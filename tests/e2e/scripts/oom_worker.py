"""The workers keep every sample in a cache that is never bounded (4 MB per 0.1 s each, every page
written) until the kernel's OOM killer ends one of them. Run it under a memory limit."""
import time

import torch
from torch.utils.data import DataLoader, Dataset

CACHE = []


class Records(Dataset):
    def __len__(self):
        return 100_000

    def __getitem__(self, i):
        CACHE.append(torch.ones(2**20))
        time.sleep(0.1)
        return torch.zeros(3)


if __name__ == "__main__":
    for x in DataLoader(Records(), batch_size=2, num_workers=2):
        x.sum()
