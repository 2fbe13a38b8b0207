"""Image-like samples stored compressed: __getitem__ decompresses a 1 MB buffer (zlib), then
a cheap transform pipeline crops and scales it. Decoding, outside the pipeline, dominates."""
import zlib

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class Crop:
    def __call__(self, x):
        return x[:64, :64]


class ToFloat:
    def __call__(self, x):
        return torch.from_numpy(x.astype(np.float32) / 255.0)


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Images(Dataset):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.blobs = [zlib.compress(rng.integers(0, 8, size=(1024, 1024), dtype=np.uint8).tobytes(), 1)
                      for _ in range(8)]
        self.transform = Compose([Crop(), ToFloat()])

    def __len__(self):
        return 4000

    def __getitem__(self, i):
        raw = zlib.decompress(self.blobs[i % len(self.blobs)])
        img = np.frombuffer(raw, dtype=np.uint8).reshape(1024, 1024)
        return self.transform(img)


if __name__ == "__main__":
    loader = DataLoader(Images(), batch_size=4, num_workers=2)
    w = torch.nn.Parameter(torch.zeros(64))
    opt = torch.optim.SGD([w], lr=0.01)
    for x in loader:
        opt.zero_grad()
        (x @ w).sum().backward()
        opt.step()
