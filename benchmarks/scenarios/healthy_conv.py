"""Control: a CNN on in-memory images, loaded by 2 workers. The step dominates."""
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class Cached(Dataset):
    def __init__(self):
        self.x = torch.rand(1024, 3, 64, 64)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 5


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.c2 = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.fc = torch.nn.Linear(64, 5)

    def forward(self, x):
        x = F.relu(self.c2(F.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


if __name__ == "__main__":
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loader = DataLoader(Cached(), batch_size=32, num_workers=2, persistent_workers=True)
    for epoch in range(10):
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
