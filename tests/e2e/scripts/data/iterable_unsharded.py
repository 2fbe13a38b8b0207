"""An IterableDataset that does not shard: every worker yields the whole stream, so each
epoch delivers num_workers copies of every sample. `--sharded` splits it with
get_worker_info() (the fix)."""
import sys
import time

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class Stream(IterableDataset):
    def __init__(self, n, shard):
        self.n, self.shard = n, shard

    def __iter__(self):
        info = get_worker_info()
        ids = range(self.n)
        if self.shard and info is not None:
            ids = range(info.id, self.n, info.num_workers)
        for i in ids:
            time.sleep(0.002)
            yield torch.full((4,), float(i))


if __name__ == "__main__":
    loader = DataLoader(Stream(400, "--sharded" in sys.argv), batch_size=4, num_workers=2)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=0.01)
    for epoch in range(100):
        for x in loader:
            opt.zero_grad()
            (x @ w).sum().backward()
            opt.step()
