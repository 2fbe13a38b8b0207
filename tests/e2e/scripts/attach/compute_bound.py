"""Fast data, heavy step: the loader keeps up."""

import torch
from torch.utils.data import DataLoader, Dataset

from _common import Progress, bounded_life


class Fast(Dataset):
    def __len__(self):
        return 1_000_000

    def __getitem__(self, i):
        return torch.zeros(4)


def train_step(w, batch):
    x = w
    for _ in range(8):
        x = x @ w  # MATMUL LINE
    return x.sum() + batch.sum()


if __name__ == "__main__":
    torch.set_num_threads(1)
    bounded_life()
    progress = Progress()
    w = torch.randn(1024, 1024) / 32
    loader = DataLoader(Fast(), batch_size=4, num_workers=2)
    for step, batch in enumerate(loader, 1):
        train_step(w, batch)
        progress.step(step)
