"""A MONAI dictionary pipeline on synthetic volumes (the MedNIST-style shape)."""
import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, RandFlipd, RandGaussianNoised, ScaleIntensityd

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    items = [{"image": rng.random((64, 64), dtype=np.float32), "label": i % 6} for i in range(512)]
    transform = Compose([
        EnsureChannelFirstd(keys="image", channel_dim="no_channel"),
        ScaleIntensityd(keys="image"),
        RandFlipd(keys="image", prob=0.5, spatial_axis=0),
        RandGaussianNoised(keys="image", prob=1.0, std=0.1),
    ])
    loader = DataLoader(Dataset(items, transform), batch_size=16, num_workers=2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * 64, 6))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(20):
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(model(batch["image"].as_tensor()), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
