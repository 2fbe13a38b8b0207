"""Workload for benchmarks/overhead.py: a training loop that times itself.

Prints `steps_per_s=X` for its own timed loop. OVERHEAD_MODE=torch_profiler wraps the loop
in torch.profiler (CPU activities) for the comparison. OVERHEAD_MODE=ab measures the hooks in
one process instead: chunks of steps alternately with loaderdoctor's hooks installed (events
written to /dev/null) and not, and prints `ab_ratio=R`, the median over chunk pairs of hooked
steps/s over plain (what the hooks themselves cost, free of the drift between processes).
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


def ab(chunks=200, per_chunk=100):
    import statistics

    from loaderdoctor.child import patches
    from loaderdoctor.child import recorder as hooks
    from loaderdoctor.child.emitter import Emitter

    fd = os.open(os.devnull, os.O_WRONLY)
    rec = hooks.Recorder(Emitter(fd), steps=10**9)

    def chunk():
        it = iter(loader)
        for _ in range(5):  # warm-up of this iterator, untimed
            next(it)
        t = time.perf_counter()
        for _ in range(per_chunk):
            x, y = next(it)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return per_chunk / (time.perf_counter() - t)

    ratios = []
    for k in range(chunks):
        first_hooked = k % 2 == 0  # alternate the order, so a trend does not favour one arm
        rates = {}
        for hooked in (first_hooked, not first_hooked):
            if hooked:
                patches.install(rec)
            try:
                rates[hooked] = chunk()
            finally:
                if hooked:
                    patches.uninstall()
        ratios.append(rates[True] / rates[False])
    q = statistics.quantiles(ratios, n=4)
    print(f"ab_chunks={chunks}x{per_chunk} steps, quartiles {q[0]:.4f} {q[1]:.4f} {q[2]:.4f}")
    print(f"ab_ratio={statistics.median(ratios):.4f}", flush=True)


if os.environ.get("OVERHEAD_MODE") == "ab":
    ab()
    sys.exit(0)
if os.environ.get("OVERHEAD_MODE") == "torch_profiler":
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]):
        rate = loop()
else:
    rate = loop()
print(f"steps_per_s={rate:.3f}", flush=True)
