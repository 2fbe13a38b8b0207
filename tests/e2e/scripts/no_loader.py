"""Full-batch training on in-memory tensors: no DataLoader at all."""
import torch

x, y = torch.randn(256, 8), torch.randn(256, 1)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(20):
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
