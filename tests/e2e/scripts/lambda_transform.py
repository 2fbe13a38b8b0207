"""A lambda in the transform pipeline: fine under fork, unpicklable under spawn."""
import torch
from torch.utils.data import DataLoader, Dataset


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


def scale(x):
    return x * 2


class Items(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return self.transform(torch.ones(2))


def main():
    transform = Compose([scale, lambda x: x + 1, scale])
    loader = DataLoader(Items(transform), batch_size=4, num_workers=2)
    for epoch in range(5):
        for x in loader:
            x.sum()


if __name__ == "__main__":
    main()
