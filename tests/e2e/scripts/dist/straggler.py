"""Rank 1's dataset reads 20x slower than rank 0's: rank 1 is the straggler, cause input."""

from ddp_common import SleepyDataset, setup, train
from torch.utils.data import DataLoader

if __name__ == "__main__":
    rank, world = setup()
    ds = SleepyDataset(sleep_s=0.03 if rank == 1 else 0.0015)
    train(DataLoader(ds, batch_size=4, num_workers=0))
