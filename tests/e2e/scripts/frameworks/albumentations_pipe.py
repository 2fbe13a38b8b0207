"""albumentations.Compose on numpy HWC images inside Dataset.__getitem__ (self.transform)."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else `import albumentations` asks pypi.org (2 s timeout)

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


class NumpyImages(Dataset):
    def __init__(self, n, transform=None, seed=0):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, size=(n, 48, 48, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 5, size=n)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        image = self.images[idx]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image, int(self.labels[idx])


def build_model():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 5),
    )


if __name__ == "__main__":
    train_transform = A.Compose([
        A.RandomCrop(height=32, width=32),
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.05, 0.05), scale=(0.95, 1.05), rotate=(-15, 15), p=0.5),
        A.RandomBrightnessContrast(p=0.3),
        A.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ])
    val_transform = A.Compose([A.CenterCrop(height=32, width=32),
                               A.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))])
    train_loader = DataLoader(NumpyImages(800, train_transform), batch_size=16, shuffle=True, num_workers=2)
    val_loader = DataLoader(NumpyImages(96, val_transform, seed=1), batch_size=32, num_workers=1)

    model = build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for epoch in range(2):
        model.train()
        for images, targets in train_loader:
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, targets in val_loader:
                correct += (model(images).argmax(1) == targets).sum().item()
        print(f"epoch {epoch}: val acc {correct / len(val_loader.dataset):.3f}")
    print("albumentations_pipe done")
