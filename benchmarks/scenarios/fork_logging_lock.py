"""A background uploader holds the stats lock while the loader forks; the dataset's
__getitem__ records a statistic under the same lock."""
import threading
import time

import torch
from torch.utils.data import DataLoader, Dataset

STATS = {"reads": 0}
STATS_LOCK = threading.Lock()
uploading = threading.Event()


def uploader():
    while True:
        with STATS_LOCK:
            uploading.set()
            time.sleep(3600)  # a slow upload while holding the lock


class Records(Dataset):
    def __len__(self):
        return 256

    def __getitem__(self, i):
        with STATS_LOCK:
            STATS["reads"] += 1
        return torch.ones(3)


if __name__ == "__main__":
    threading.Thread(target=uploader, name="stats-uploader", daemon=True).start()
    uploading.wait(10)
    for epoch in range(2):
        for x in DataLoader(Records(), batch_size=8, num_workers=2):
            x.sum()
