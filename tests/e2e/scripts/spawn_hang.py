"""Spawn workers with persistent_workers block forever after 5 batches."""
import threading, torch
from torch.utils.data import DataLoader, Dataset
class S(Dataset):
    def __len__(self): return 1000
    def __getitem__(self, i):
        if i >= 20: threading.Event().wait()
        return torch.zeros(1000)
if __name__ == "__main__":
    for x in DataLoader(S(), batch_size=4, num_workers=2, multiprocessing_context="spawn", persistent_workers=True):
        pass
