"""An IterableDataset streaming records from a slow source (a queue or a socket)."""
import time

import torch
from torch.utils.data import DataLoader, IterableDataset


class LogStream(IterableDataset):
    def __iter__(self):
        n = 0
        while True:
            time.sleep(0.008)  # waiting for the next record
            n += 1
            yield torch.randn(32), n % 2


model = torch.nn.Linear(32, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for x, y in DataLoader(LogStream(), batch_size=32):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
