"""Spawn workers and no main guard: each worker re-runs this whole file."""
import torch
from torch.utils.data import DataLoader, Dataset


class Items(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.zeros(2)


loader = DataLoader(Items(), batch_size=4, num_workers=2, multiprocessing_context="spawn")
for epoch in range(2):
    for x in loader:
        x.sum()
