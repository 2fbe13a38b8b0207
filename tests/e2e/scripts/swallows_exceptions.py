"""A loop that swallows every Exception and would run forever."""
import torch
from torch.utils.data import DataLoader, TensorDataset

loader = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
while True:
    try:
        for (xb,) in loader:
            xb.sum()
    except Exception:
        pass
