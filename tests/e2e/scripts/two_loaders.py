"""A train loader (many steps) and a validation loader (few), built once per epoch."""
import time

import torch
from torch.utils.data import DataLoader, TensorDataset


def make_loader(n, workers=0):
    return DataLoader(TensorDataset(torch.randn(n, 4)), batch_size=4, num_workers=workers)


val = make_loader(16)
for epoch in range(50):
    train = DataLoader(TensorDataset(torch.randn(80, 4)), batch_size=4, num_workers=0)
    for (xb,) in train:
        time.sleep(0.001)
    for (xb,) in val:
        pass
