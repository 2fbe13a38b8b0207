"""Short epochs, workers re-created every epoch, each with a slow worker_init_fn."""
import time

import torch
from torch.utils.data import DataLoader, Dataset


def open_connections(worker_id):
    time.sleep(1.0)  # e.g. connecting to a database or loading an index


class Rows(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(0.003)
        return torch.randn(4)


if __name__ == "__main__":
    loader = DataLoader(Rows(), batch_size=8, num_workers=2, worker_init_fn=open_connections)
    model = torch.nn.Linear(4, 1)
    for epoch in range(100):
        for x in loader:
            model(x).sum().backward()
