"""MONAI: a dictionary pipeline where an elastic deformation of large images dominates."""
import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, Rand2DElasticd, RandFlipd, ScaleIntensityd

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    items = [{"img": rng.random((192, 192), dtype=np.float32), "label": k % 6} for k in range(256)]
    tf = Compose([EnsureChannelFirstd("img", channel_dim="no_channel"), ScaleIntensityd("img"),
                  Rand2DElasticd("img", spacing=(16, 16), magnitude_range=(1, 2), prob=1.0), RandFlipd("img", prob=0.5)])
    loader = DataLoader(Dataset(items, tf), batch_size=8, num_workers=0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(64, 6))
    for epoch in range(10):
        for b in loader:
            torch.nn.functional.cross_entropy(net(b["img"].as_tensor()), b["label"]).backward()
