"""One sample blocks forever inside a worker (a read that never returns)."""
import threading

import torch
from torch.utils.data import DataLoader, Dataset

NEVER = threading.Event()


class Records(Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        if i == 13:
            NEVER.wait()  # the stuck read
        return torch.full((4,), float(i))


if __name__ == "__main__":
    for x in DataLoader(Records(), batch_size=4, num_workers=2):
        x.sum()
