"""An IterableDataset over shards, split by worker: with 1 shard and 4 workers, workers 1-3
get no shard and deliver nothing. `--shards 4` gives every worker one."""
import sys
import time

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class Shards(IterableDataset):
    def __init__(self, shards, per_shard):
        self.shards, self.per_shard = shards, per_shard

    def __iter__(self):
        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id::info.num_workers]
        for s in mine:
            first = self.shards.index(s) * self.per_shard
            for i in range(first, first + self.per_shard):
                time.sleep(0.002)
                yield torch.full((4,), float(i))


if __name__ == "__main__":
    k = int(sys.argv[sys.argv.index("--shards") + 1]) if "--shards" in sys.argv else 1
    loader = DataLoader(Shards([f"shard-{j}" for j in range(k)], 1600 // k), batch_size=4, num_workers=4)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=0.01)
    for epoch in range(100):
        for x in loader:
            opt.zero_grad()
            (x @ w).sum().backward()
            opt.step()
