"""Prints a lot (14 MB) at its first steps, as a chatty logger does."""
import torch
from torch.utils.data import DataLoader, TensorDataset

if __name__ == "__main__":
    for i, (x,) in enumerate(DataLoader(TensorDataset(torch.zeros(4000, 2)), batch_size=2)):
        if i < 14:
            print("x" * 1_000_000, flush=True)
