"""A small classifier with two fork workers and an Adam optimizer (whose first use imports
torch's lazy torch._dynamo); prints the OpenMP threads torch runs with."""
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Points(Dataset):
    def __len__(self):
        return 4096

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.randn(16, generator=g), i % 3


def main():
    print("threads", torch.get_num_threads(), flush=True)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(Points(), batch_size=32, shuffle=True, num_workers=2)
    for epoch in range(50):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()


if __name__ == "__main__":
    main()
