"""A worker fails on a file whose name is not UTF-8 (carried as a surrogate escape), with ANSI
colours and an OSC title sequence in the message, as rich/loguru/tqdm produce."""
import os

import torch
from torch.utils.data import DataLoader, Dataset

NAME = os.fsdecode(b"img_\xff\xfe.png")


class Files(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        if i == 9:
            raise ValueError(f"\x1b[31mcannot decode\x1b[0m {NAME} \x1b]0;pwned\x07 <script>alert(1)</script>\x00")
        return torch.zeros(2)


if __name__ == "__main__":
    for x in DataLoader(Files(), batch_size=4, num_workers=2):
        x.sum()
