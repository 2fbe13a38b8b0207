"""Each sample is a round trip to slow network storage (12 ms), num_workers=0."""
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class BucketImages(Dataset):
    def __init__(self, keys):
        self.keys = keys

    def __len__(self):
        return len(self.keys)

    def fetch(self, key):
        time.sleep(0.012)  # GET s3://bucket/<key>
        return np.frombuffer(np.random.bytes(3 * 32 * 32), dtype=np.uint8).reshape(3, 32, 32)

    def __getitem__(self, i):
        return torch.from_numpy(self.fetch(self.keys[i]).astype(np.float32) / 255), i % 10


if __name__ == "__main__":
    loader = DataLoader(BucketImages([f"img/{k}.png" for k in range(20000)]), batch_size=16, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(3):
        for images, labels in loader:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
