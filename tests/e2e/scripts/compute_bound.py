"""Compute-bound: batches come from in-memory tensors, the step is a wide MLP."""
import torch
from torch.utils.data import DataLoader, TensorDataset

x = torch.randn(4096, 512)
y = torch.randint(0, 10, (4096,))
loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048),
                            torch.nn.ReLU(), torch.nn.Linear(2048, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(100):
    for xb, yb in loader:
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
