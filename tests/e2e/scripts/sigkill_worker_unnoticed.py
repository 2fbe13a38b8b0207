"""A worker is killed with SIGKILL, and the main process does not hear of it at once.

torch learns of a dead worker from SIGCHLD, whose handler runs in the main thread; when the
signal lands on another thread (or, as here, the main thread blocks it) torch notices only at
its 5 s liveness check. Blocking SIGCHLD makes that window certain instead of rare.
"""
import os
import signal
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Records(Dataset):
    def __len__(self):
        return 200

    def __getitem__(self, i):
        if i == 10:
            time.sleep(1.0)  # the main process is waiting for this batch by now
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(3)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    for x in DataLoader(Records(), batch_size=2, num_workers=2):
        x.sum()
