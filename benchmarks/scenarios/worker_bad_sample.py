"""A corrupt record makes a worker raise."""
import json

import torch
from torch.utils.data import DataLoader, Dataset


class JsonLines(Dataset):
    def __init__(self):
        self.lines = ['{"x": [1, 2, 3]}'] * 100
        self.lines[41] = '{"x": [1, 2,'  # truncated write

    def __len__(self):
        return len(self.lines)

    def __getitem__(self, i):
        return torch.tensor(json.loads(self.lines[i])["x"], dtype=torch.float32)


if __name__ == "__main__":
    for epoch in range(3):
        for x in DataLoader(JsonLines(), batch_size=4, num_workers=2):
            x.mean()
