"""Batches of 8 MB from 2 workers: 32 MB in flight with the default prefetch_factor."""
import torch
from torch.utils.data import DataLoader, Dataset


class Frames(Dataset):
    def __len__(self):
        return 512

    def __getitem__(self, i):
        return torch.ones(256, 1024)  # 1 MB per sample


if __name__ == "__main__":
    for epoch in range(3):
        for x in DataLoader(Frames(), batch_size=8, num_workers=2):
            x.sum()
