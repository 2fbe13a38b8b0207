"""A healthy loader: numpy-backed samples, persistent workers, a cheap pipeline whose only
costly step is random: none of the data findings applies."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class RandomNoise:
    def __call__(self, x):
        return x + torch.randn_like(x) * 0.01


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Rows(Dataset):
    def __init__(self):
        self.data = np.random.default_rng(0).random((4000, 256), dtype=np.float32)
        self.transform = Compose([RandomNoise()])

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.transform(torch.from_numpy(self.data[i]))


if __name__ == "__main__":
    loader = DataLoader(Rows(), batch_size=16, num_workers=2, persistent_workers=True)
    model = torch.nn.Linear(256, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(100):
        for x in loader:
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
