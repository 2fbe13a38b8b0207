"""The script changes directory before its loader starts; a worker then blocks in __getitem__."""
import os
import tempfile
import threading

import torch
from torch.utils.data import DataLoader, Dataset

NEVER = threading.Event()


class Records(Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        if i == 13:
            NEVER.wait()
        return torch.zeros(2)


if __name__ == "__main__":
    os.chdir(tempfile.gettempdir())
    for x in DataLoader(Records(), batch_size=4, num_workers=2):
        x.sum()
