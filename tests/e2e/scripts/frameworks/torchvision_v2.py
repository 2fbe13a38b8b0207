"""torchvision.transforms.v2 pipeline on random uint8 images (CHW tensors), small CNN."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2


class RandomImages(Dataset):
    def __init__(self, n, transform=None, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, 40, 40), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, 10, (n,), generator=g)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[i]


if __name__ == "__main__":
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    train_tf = v2.Compose([
        v2.RandomResizedCrop(32, scale=(0.6, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.2, 0.2, 0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])
    val_tf = v2.Compose([v2.CenterCrop(32), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    train_loader = DataLoader(RandomImages(800, train_tf), batch_size=16, shuffle=True, num_workers=2)
    val_loader = DataLoader(RandomImages(96, val_tf, seed=1), batch_size=32, num_workers=1)

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    for epoch in range(2):
        model.train()
        for images, targets in train_loader:
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in val_loader)
        print(f"epoch {epoch}: val acc {correct / 96:.3f}")
    print("torchvision_v2 done")
