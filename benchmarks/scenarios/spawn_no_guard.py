"""Written for Linux, moved to a spawn platform: no main guard."""
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

mp.set_start_method("spawn", force=True)


class Pairs(Dataset):
    def __len__(self):
        return 128

    def __getitem__(self, i):
        return torch.randn(4), torch.randn(1)


net = torch.nn.Linear(4, 1)
for x, y in DataLoader(Pairs(), batch_size=8, num_workers=2):
    (net(x) - y).pow(2).mean().backward()
