"""Rank 1's DataLoader worker blocks forever in __getitem__ (read_blob); rank 0 waits in the
gradient all-reduce for it."""

from ddp_common import SleepyDataset, env_rank, setup, train
from torch.utils.data import DataLoader

if __name__ == "__main__":
    rank, world = setup()
    ds = SleepyDataset(n=64, sleep_s=0.001, block=rank == 1)
    train(DataLoader(ds, batch_size=4, num_workers=1))
