# Reproducer-style script: no __main__ guard, everything at top level, num_workers=2.
# (Works with the fork start method; spawn/forkserver re-import this file in each worker.)
import torch
from torch.utils.data import DataLoader, TensorDataset

ds = TensorDataset(torch.randn(640, 10), torch.randint(0, 2, (640,)))
loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)
model = torch.nn.Linear(10, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
n = 0
for epoch in range(2):
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += 1
print("loop_no_guard done:", n, "steps")
