"""loaderdoctor's bundled demo: a small image classifier trained on images it makes itself.

It is written the way many real training scripts are: images on disk decoded per sample,
a chain of augmentations in Python, and `num_workers=0` (the DataLoader default). That
makes the step wait on data, which is what `loaderdoctor probe` should find.

    python -m loaderdoctor.demo.train_demo --epochs 1
"""

import argparse
import os
import tempfile

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

N_IMAGES = 1200
SIZE = 48
CLASSES = ("disc", "square", "cross")


def make_images(root: str) -> str:
    """Write N_IMAGES small grey images (.npy, one per file) with a shape per class."""
    folder = os.path.join(root, f"loaderdoctor-demo-{N_IMAGES}-{SIZE}")
    done = os.path.join(folder, "done")
    if os.path.exists(done):
        return folder
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(N_IMAGES):
        label = i % len(CLASSES)
        cy, cx = rng.integers(12, SIZE - 12, size=2)
        r = rng.integers(5, 10)
        if label == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif label == 1:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        else:
            mask = (abs(yy - cy) <= 2) & (abs(xx - cx) <= r) | (abs(xx - cx) <= 2) & (abs(yy - cy) <= r)
        img = (mask * 200 + rng.normal(20, 15, size=(SIZE, SIZE))).clip(0, 255).astype(np.uint8)
        np.save(os.path.join(folder, f"{i:05d}_{label}.npy"), img)
    open(done, "w").close()
    return folder


# ---- transforms: small callables chained by Compose, as in torchvision or MONAI


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ToFloat:
    def __call__(self, img):
        return img.astype(np.float32) / 255.0


class RandomFlip:
    def __call__(self, img):
        return img[:, ::-1].copy() if np.random.rand() < 0.5 else img


class GaussianBlur:
    """A separable blur written in plain numpy: the expensive step of this pipeline."""

    def __init__(self, sigma=1.5, radius=4, passes=6):
        k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        self.kernel = k / k.sum()
        self.passes = passes

    def __call__(self, img):
        for _ in range(self.passes):
            img = np.apply_along_axis(lambda row: np.convolve(row, self.kernel, mode="same"), 1, img)
            img = np.apply_along_axis(lambda col: np.convolve(col, self.kernel, mode="same"), 0, img)
        return img


class Normalize:
    def __init__(self, mean=0.2, std=0.25):
        self.mean, self.std = mean, std

    def __call__(self, img):
        return ((img - self.mean) / self.std).astype(np.float32)


class ToTensor:
    def __call__(self, img):
        return torch.from_numpy(np.ascontiguousarray(img))[None]


class ShapesDataset(Dataset):
    def __init__(self, folder, transform=None):
        self.files = sorted(f for f in os.listdir(folder) if f.endswith(".npy"))
        self.folder = folder
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        name = self.files[i]
        img = np.load(os.path.join(self.folder, name))
        label = int(name.rsplit("_", 1)[1].split(".")[0])
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (SIZE // 4) ** 2, len(CLASSES)),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default=tempfile.gettempdir())
    args = parser.parse_args()

    folder = make_images(args.data)
    transform = Compose([ToFloat(), RandomFlip(), GaussianBlur(), Normalize(), ToTensor()])
    train_loader = DataLoader(ShapesDataset(folder, transform), batch_size=args.batch_size, shuffle=True,
                              num_workers=0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        seen = correct = 0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
        print(f"epoch {epoch + 1}: accuracy {correct / max(seen, 1):.2f}")


if __name__ == "__main__":
    main()
