"""Leaves a detached process behind (double fork, new session: its parent is gone at once),
then trains: the stage's end must still find and end it."""
import os
import time

import torch
from torch.utils.data import DataLoader

if __name__ == "__main__":
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(600)
        os._exit(0)
    os.waitpid(pid, 0)
    for epoch in range(100):
        for x in DataLoader(torch.arange(512.0), batch_size=8):
            x.sum()
