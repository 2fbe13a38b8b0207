"""A background thread holds a lock at the moment the loader forks its workers; the
dataset takes the same lock. argv[1]: the start method (fork or spawn)."""
import sys
import threading
import time

import torch
from torch.utils.data import DataLoader, Dataset

stats_lock = threading.Lock()
held = threading.Event()


def flush_metrics_forever():
    while True:
        with stats_lock:
            held.set()
            time.sleep(3600)  # a slow flush, holding the lock


class Counted(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        with stats_lock:
            pass
        return torch.zeros(2)


def main():
    method = sys.argv[1] if len(sys.argv) > 1 else "fork"
    threading.Thread(target=flush_metrics_forever, name="metrics-flusher", daemon=True).start()
    held.wait(10)
    loader = DataLoader(Counted(), batch_size=4, num_workers=2, multiprocessing_context=method)
    for epoch in range(3):
        for x in loader:
            x.sum()


if __name__ == "__main__":
    main()
