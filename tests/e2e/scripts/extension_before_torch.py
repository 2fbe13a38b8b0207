"""Imports a compiled extension of another package (Pillow's) before torch, as scripts that
start with `from PIL import Image` do."""
from PIL import Image

import torch
from torch.utils.data import DataLoader

print("pillow", Image.__name__, flush=True)
for epoch in range(100):
    for x in DataLoader(torch.arange(2048.0), batch_size=16, num_workers=1):
        torch.sin(x).sum()
