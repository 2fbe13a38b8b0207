"""CPU-bound: each sample is computed in pure Python (no I/O, holds the GIL)."""
import torch
from torch.utils.data import DataLoader, Dataset


class Synthesised(Dataset):
    def __len__(self):
        return 100_000

    def __getitem__(self, i):
        acc = 0
        for k in range(30_000):
            acc += (k * i) % 7
        return torch.tensor([float(acc)]), i % 2


if __name__ == "__main__":
    loader = DataLoader(Synthesised(), batch_size=8)
    model = torch.nn.Linear(1, 2)
    for epoch in range(10):
        for x, y in loader:
            model(x).sum().backward()
