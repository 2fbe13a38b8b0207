"""Trains slowly and forever (until stopped); prints a line when the first batch arrived."""
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Slow(Dataset):
    def __len__(self):
        return 10**6

    def __getitem__(self, i):
        time.sleep(0.05)
        return torch.zeros(2)


for i, x in enumerate(DataLoader(Slow(), batch_size=2, num_workers=2)):
    if i == 0:
        print("FIRST BATCH", flush=True)
