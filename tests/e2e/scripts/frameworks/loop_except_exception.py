"""A loop that tolerates bad samples: batches are pulled with next(); a batch whose loading
raised is skipped, and the per-batch body is wrapped in `try: ... except Exception: continue`.
Every 97th sample is "corrupt" and raises inside the worker."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


class SometimesCorrupt(Dataset):
    def __init__(self, n=960):
        self.x = torch.randn(n, 16)
        self.y = torch.randint(0, 2, (n,))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i % 97 == 96:
            raise ValueError(f"corrupt record {i}")
        return self.x[i], self.y[i]


if __name__ == "__main__":
    loader = DataLoader(SometimesCorrupt(), batch_size=8, shuffle=True, num_workers=2)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    steps = skipped = 0
    for epoch in range(2):
        it = iter(loader)
        while True:
            try:
                x, y = next(it)
            except StopIteration:
                break
            except Exception:  # noqa: BLE001  (a worker raised: skip this batch, keep going)
                skipped += 1
                continue
            try:
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
            except Exception:  # noqa: BLE001, S112  (the script's own step failing: skip it)
                continue
    print(f"loop_except_exception done: {steps} steps, {skipped} batches skipped")
