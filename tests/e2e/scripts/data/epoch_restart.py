"""Short epochs, iterated again each epoch with workers re-created every time, each worker
opening a connection (0.4 s) in its worker_init_fn."""
import time

import torch
from torch.utils.data import DataLoader, Dataset


def connect(worker_id):
    time.sleep(0.4)


class Rows(Dataset):
    def __len__(self):
        return 48

    def __getitem__(self, i):
        time.sleep(0.002)
        return torch.randn(4)


if __name__ == "__main__":
    loader = DataLoader(Rows(), batch_size=4, num_workers=2, worker_init_fn=connect)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=0.01)
    for epoch in range(100):
        for x in loader:
            opt.zero_grad()
            (x @ w).sum().backward()
            opt.step()
