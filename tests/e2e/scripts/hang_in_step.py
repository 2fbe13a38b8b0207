"""The training step blocks forever in the main process; the loader is fine."""
import threading

import torch
from torch.utils.data import DataLoader, TensorDataset


def sync_with_parameter_server(step):
    if step == 8:
        threading.Event().wait()  # a collective that never completes


def main():
    loader = DataLoader(TensorDataset(torch.randn(400, 4)), batch_size=4, num_workers=2)
    for step, (x,) in enumerate(loader):
        x.sum()
        sync_with_parameter_server(step)


if __name__ == "__main__":
    main()
