"""Worker 0 is slow (its shard sits on a slow disk, say): 10x the others' time per sample.
With in-order delivery every third batch waits for it."""
import time

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info


class Rows(Dataset):
    def __len__(self):
        return 4000

    def __getitem__(self, i):
        info = get_worker_info()
        time.sleep(0.02 if info is not None and info.id == 0 else 0.002)
        return torch.randn(4)


if __name__ == "__main__":
    loader = DataLoader(Rows(), batch_size=4, num_workers=3)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=0.01)
    for x in loader:
        opt.zero_grad()
        (x @ w).sum().backward()
        opt.step()
