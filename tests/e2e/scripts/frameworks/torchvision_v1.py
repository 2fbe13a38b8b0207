"""Classic torchvision.transforms (v1) on random PIL images, torchvision's mobilenet_v3_small at 32 px."""
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms


class RandomPILImages(Dataset):
    def __init__(self, n, transform=None, seed=0):
        rng = np.random.default_rng(seed)
        self.arrays = rng.integers(0, 256, size=(n, 40, 40, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 10, size=n)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.arrays[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])


if __name__ == "__main__":
    # CPU-only box: one intra-op thread, the cores go to the loader workers (default OpenMP threads
    # next to busy workers made this loop several times slower on a loaded 2-core machine)
    torch.set_num_threads(1)
    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(32),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        normalize,
    ])
    val_tf = transforms.Compose([transforms.Resize(36), transforms.CenterCrop(32), transforms.ToTensor(), normalize])
    train_loader = DataLoader(RandomPILImages(800, train_tf), batch_size=16, shuffle=True, num_workers=2)
    val_loader = DataLoader(RandomPILImages(96, val_tf, seed=1), batch_size=32, num_workers=1)

    model = models.mobilenet_v3_small(weights=None, num_classes=10)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for epoch in range(2):
        model.train()
        for images, target in train_loader:
            loss = criterion(model(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in val_loader)
        print(f"epoch {epoch}: val acc {correct / 96:.3f}")
    print("torchvision_v1 done")
