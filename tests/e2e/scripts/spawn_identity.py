"""Records what a script can see of how it was started, and what its spawn workers
produced, into the JSON file named by its first argument."""
import json
import os
import sys

import torch
from torch.utils.data import DataLoader, Dataset


class LocalDataset(Dataset):  # defined in the script: spawn workers must unpickle it
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.tensor([i * 3 + 1]), os.getpid()


def main():
    out, *rest = sys.argv[1:]
    loader = DataLoader(LocalDataset(), batch_size=8, num_workers=2, multiprocessing_context="spawn")
    total, worker_pids = 0, set()
    for x, pids in loader:
        total += int(x.sum())
        worker_pids.update(int(p) for p in pids)
    with open(out, "w") as f:
        json.dump({"name": __name__, "file": __file__, "argv": rest, "path0": sys.path[0], "total": total,
                   "n_worker_pids": len(worker_pids), "main_pid_in_workers": os.getpid() in worker_pids}, f)


if __name__ == "__main__":
    main()
