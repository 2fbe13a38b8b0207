"""A hand-made split by rank of 41 samples (no DistributedSampler, no drop_last): rank 0's
shard has 21 samples (6 batches of 4 per epoch), rank 1's has 20 (5 batches)."""

from ddp_common import SleepyDataset, setup, train
from torch.utils.data import DataLoader, Subset

if __name__ == "__main__":
    rank, world = setup()
    ds = SleepyDataset(n=41, sleep_s=0.001)
    shard = Subset(ds, range(rank, len(ds), world))
    train(DataLoader(shard, batch_size=4, num_workers=0), epochs=1000)
