"""A worker is killed by SIGKILL mid-epoch (what an OOM killer does)."""
import os
import signal

import torch
from torch.utils.data import DataLoader, Dataset


class Volumes(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        if i == 13:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(8)


if __name__ == "__main__":
    for x in DataLoader(Volumes(), batch_size=2, num_workers=2):
        x.sum()
