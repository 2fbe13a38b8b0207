"""A worker is killed with SIGKILL (as the OOM killer would)."""
import os
import signal

import torch
from torch.utils.data import DataLoader, Dataset


class Records(Dataset):
    def __len__(self):
        return 200

    def __getitem__(self, i):
        if i == 10:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(3)


if __name__ == "__main__":
    for x in DataLoader(Records(), batch_size=2, num_workers=2):
        x.sum()
