"""A pipeline where one step takes most of each sample's time. The steps busy-wait for
fixed durations so the test can time them on its own."""
import time

import torch
from torch.utils.data import DataLoader, Dataset


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Decode:
    def __call__(self, x):
        spin(0.0015)
        return x


class ElasticDeform:  # the expensive one
    def __call__(self, x):
        spin(0.0070)
        return x


class Scale:
    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        spin(0.0015)
        return x * self.k


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


PIPELINE = Compose([Decode(), ElasticDeform(), Scale(2.0)])


class Volumes(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 100_000

    def __getitem__(self, i):
        return self.transform(torch.zeros(4))


if __name__ == "__main__":
    loader = DataLoader(Volumes(PIPELINE), batch_size=8, num_workers=1)
    for epoch in range(10):
        for x in loader:
            x.sum()
