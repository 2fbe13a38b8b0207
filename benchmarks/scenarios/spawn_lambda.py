"""A preprocessing lambda inside the dataset; the loader uses forkserver workers."""
import torch
from torch.utils.data import DataLoader, Dataset


class Table(Dataset):
    def __init__(self, normalise):
        self.normalise = normalise
        self.rows = torch.randn(256, 6)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.normalise(self.rows[i])


def main():
    mean, std = 0.0, 1.0
    ds = Table(normalise=lambda r: (r - mean) / std)
    loader = DataLoader(ds, batch_size=16, num_workers=2, multiprocessing_context="forkserver")
    for epoch in range(3):
        for rows in loader:
            rows.sum()


if __name__ == "__main__":
    main()
