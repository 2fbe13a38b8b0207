"""Images augmented in pure numpy; one augmentation (a python-loop elastic warp) dominates."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class RandomCrop:
    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        y, x = np.random.randint(0, img.shape[0] - self.size, 2)
        return img[y:y + self.size, x:x + self.size]


class ElasticWarp:
    def __call__(self, img):
        out = np.empty_like(img)
        h, w = img.shape
        for r in range(h):
            shift = int(2 * np.sin(r / 3.0))
            for c in range(w):
                out[r, c] = img[r, (c + shift) % w]
        return out


class ToTensor:
    def __call__(self, img):
        return torch.from_numpy(img.astype(np.float32))[None]


class Scans(Dataset):
    def __init__(self, transform):
        self.transform = transform
        self.data = np.random.rand(64, 80, 80).astype(np.float32)

    def __len__(self):
        return 100_000

    def __getitem__(self, i):
        return self.transform(self.data[i % 64]), i % 3


if __name__ == "__main__":
    tf = Compose([RandomCrop(48), ElasticWarp(), ToTensor()])
    loader = DataLoader(Scans(tf), batch_size=16)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    for x, y in loader:
        torch.nn.functional.cross_entropy(net(x), y).backward()
