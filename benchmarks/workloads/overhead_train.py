"""Workload for benchmarks/overhead.py: a training loop that times itself.

Prints `steps_per_s=X` for its own timed loop. OVERHEAD_MODE=torch_profiler wraps the loop
in torch.profiler (CPU activities) for the comparison.
"""
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 400
torch.manual_seed(0)
torch.set_num_threads(1)
data = TensorDataset(torch.randn(STEPS * 64 + 1280, 128), torch.randint(0, 10, (STEPS * 64 + 1280,)))
loader = DataLoader(data, batch_size=64, shuffle=True, num_workers=0)
model = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                            torch.nn.Linear(512, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)


def loop():
    it = iter(loader)
    for _ in range(20):  # warm-up, untimed
        x, y = next(it)
    t = time.perf_counter()
    n = 0
    for x, y in it:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += 1
    return n / (time.perf_counter() - t)


if os.environ.get("OVERHEAD_MODE") == "torch_profiler":
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]):
        rate = loop()
else:
    rate = loop()
print(f"steps_per_s={rate:.3f}", flush=True)
