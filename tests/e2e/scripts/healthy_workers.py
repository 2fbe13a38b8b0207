"""A healthy loop with 2 workers."""
import torch
from torch.utils.data import DataLoader, TensorDataset

if __name__ == "__main__":
    model = torch.nn.Linear(4, 1)
    for epoch in range(5):
        for (x,) in DataLoader(TensorDataset(torch.randn(200, 4)), batch_size=4, num_workers=2):
            model(x).sum().backward()
