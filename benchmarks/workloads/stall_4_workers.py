"""Benchmark workload: 4 workers deliver 20 batches, then every worker blocks forever."""
import threading

import torch
from torch.utils.data import DataLoader, Dataset


class Stalls(Dataset):
    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        if i >= 80:
            threading.Event().wait()
        return torch.zeros(8)


if __name__ == "__main__":
    for x in DataLoader(Stalls(), batch_size=4, num_workers=4):
        x.sum()
