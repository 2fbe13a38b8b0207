"""Never builds a DataLoader and runs on (full-batch training on tensors, forever)."""
import torch

w = torch.zeros(3, requires_grad=True)
while True:
    (w.sum() ** 2).backward()
