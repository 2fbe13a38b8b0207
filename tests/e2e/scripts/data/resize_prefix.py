"""A deterministic, costly prefix (resize a 320x320 image to 64x64, normalise) before a
random flip: the prefix's output could be cached; the flip must stay per sample."""
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class Resize:
    def __init__(self, size):
        self.size = size

    def __call__(self, x):
        return F.interpolate(x[None], size=(self.size, self.size), mode="bicubic", antialias=True)[0]


class Normalize:
    def __call__(self, x):
        return (x - 0.5) / 0.25


class RandomFlip:
    def __call__(self, x):
        return x.flip(-1) if torch.rand(()) < 0.5 else x


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Images(Dataset):
    def __init__(self):
        self.base = torch.rand(3, 320, 320)
        self.transform = Compose([Resize(64), Normalize(), RandomFlip()])

    def __len__(self):
        return 4000

    def __getitem__(self, i):
        return self.transform(self.base + i * 1e-6)


if __name__ == "__main__":
    torch.set_num_threads(1)
    loader = DataLoader(Images(), batch_size=4, num_workers=2)
    w = torch.nn.Parameter(torch.zeros(64))
    opt = torch.optim.SGD([w], lr=0.01)
    for x in loader:
        opt.zero_grad()
        (x @ w).sum().backward()
        opt.step()
