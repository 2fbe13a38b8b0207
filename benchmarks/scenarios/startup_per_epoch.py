"""Short epochs; the workers open a connection each (1 s) and are re-created every epoch."""
import time

import torch
from torch.utils.data import DataLoader, Dataset


def connect(worker_id):
    time.sleep(1.0)


class Rows(Dataset):
    def __len__(self):
        return 48

    def __getitem__(self, i):
        time.sleep(0.002)
        return torch.randn(8), i % 2


if __name__ == "__main__":
    loader = DataLoader(Rows(), batch_size=8, num_workers=2, worker_init_fn=connect)
    model = torch.nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(200):
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
