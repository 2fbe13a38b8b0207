"""A torchvision pipeline (v1 Compose, or v2 with argv[1] == "v2") over generated PIL images."""
import sys

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

V2 = len(sys.argv) > 1 and sys.argv[1] == "v2"
if V2:
    from torchvision.transforms import v2 as T
else:
    import torchvision.transforms as T


class Pictures(Dataset):
    def __init__(self, transform):
        self.transform = transform
        rng = np.random.default_rng(0)
        self.images = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(64)]

    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        return self.transform(self.images[i % 64]), i % 4


if __name__ == "__main__":
    steps = [T.RandomResizedCrop(64), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4)]
    if V2:
        steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    else:
        steps += [T.ToTensor()]
    steps.append(T.Normalize([0.5] * 3, [0.25] * 3))
    loader = DataLoader(Pictures(T.Compose(steps)), batch_size=16, num_workers=2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 4))
    for epoch in range(10):
        for x, y in loader:
            torch.nn.functional.cross_entropy(model(x), y).backward()
