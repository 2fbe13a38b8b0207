"""Every rank reads at the same pace: no straggler."""

from ddp_common import SleepyDataset, setup, train
from torch.utils.data import DataLoader

if __name__ == "__main__":
    rank, world = setup()
    train(DataLoader(SleepyDataset(sleep_s=0.002), batch_size=4, num_workers=0))
