"""Sets its OpenMP threads before importing torch, as many scripts do: the OpenMP runtime
reads the variable once, when torch loads it."""
import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["LD_TEST_SERVICE_TOKEN"] = "tok-8c1f-never-written"  # a value loaderdoctor must not write anywhere

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

print("threads", torch.get_num_threads(), flush=True)
for epoch in range(100):
    for x in DataLoader(torch.arange(4096.0), batch_size=16, num_workers=1):
        torch.sin(x).sum()
