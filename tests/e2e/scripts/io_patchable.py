"""I/O-bound: each sample waits 8 ms (a network read), num_workers=0. More workers help;
the confirmed change is written as fix.patch. argv[1]: epochs (default many)."""
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Remote(Dataset):
    def __len__(self):
        return 256

    def __getitem__(self, i):
        time.sleep(0.008)
        return torch.randn(8), i % 2


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    loader = DataLoader(
        Remote(),
        batch_size=8,
        shuffle=True,  # a comment inside the call stays
    )
    model = torch.nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    print("io_patchable done")


if __name__ == "__main__":
    main()
