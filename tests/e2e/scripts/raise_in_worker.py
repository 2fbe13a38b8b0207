"""A worker raises on a corrupt sample. The message is hostile markup on purpose."""
import torch
from torch.utils.data import DataLoader, Dataset


class Records(Dataset):
    def __len__(self):
        return 200

    def __getitem__(self, i):
        if i == 10:
            raise ValueError("<script>alert(1)</script>")
        return torch.zeros(3)


if __name__ == "__main__":
    for x in DataLoader(Records(), batch_size=2, num_workers=2):
        x.sum()
