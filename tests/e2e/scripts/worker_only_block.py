"""A transform that blocks only inside DataLoader worker processes (as a library whose
thread pool is unusable after fork would). In the main process it returns at once."""
import threading

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info


class Resize:
    def __call__(self, x):
        return x + 1


class PoolDecode:
    def __call__(self, x):
        if get_worker_info() is not None:
            threading.Event().wait()  # never set in a worker
        return x


class ToFloat:
    def __call__(self, x):
        return x.float()


class Pipeline:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Scans(Dataset):
    transform = Pipeline([Resize(), PoolDecode(), ToFloat()])

    def __len__(self):
        return 1000

    def __getitem__(self, i):
        return self.transform(torch.zeros(2, dtype=torch.int64))


if __name__ == "__main__":
    for x in DataLoader(Scans(), batch_size=4, num_workers=2):
        x.sum()
