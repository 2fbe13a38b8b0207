"""A worker waits forever on a resource that never arrives (a queue nobody fills)."""
import queue

import torch
from torch.utils.data import DataLoader, Dataset

PENDING = queue.Queue()


class Remote(Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        if i == 37:
            return PENDING.get()  # the response never comes
        return torch.zeros(4)


if __name__ == "__main__":
    for batch in DataLoader(Remote(), batch_size=4, num_workers=2):
        batch.mean()
