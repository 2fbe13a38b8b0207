"""torchvision: PIL images through a Compose where ColorJitter + large resizes dominate."""
import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class Photos(Dataset):
    def __init__(self, tf):
        rng = np.random.default_rng(1)
        self.imgs = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(32)]
        self.tf = tf

    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        return self.tf(self.imgs[i % 32]), i % 4


if __name__ == "__main__":
    tf = T.Compose([T.RandomResizedCrop(224), T.ColorJitter(0.5, 0.5, 0.5, 0.2), T.ToTensor()])
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 4))
    for x, y in DataLoader(Photos(tf), batch_size=16):
        torch.nn.functional.cross_entropy(net(x), y).backward()
