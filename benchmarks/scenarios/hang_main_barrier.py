"""The training step waits at a barrier for a peer that never arrives; data is fine."""
import threading

import torch
from torch.utils.data import DataLoader, TensorDataset

barrier = threading.Barrier(2)


def all_reduce(grads):
    barrier.wait()  # the other rank never shows up
    return grads


def train():
    model = torch.nn.Linear(8, 1)
    for step, (x,) in enumerate(DataLoader(TensorDataset(torch.randn(512, 8)), batch_size=8, num_workers=1)):
        loss = model(x).pow(2).mean()
        loss.backward()
        if step == 10:
            all_reduce([p.grad for p in model.parameters()])


if __name__ == "__main__":
    train()
