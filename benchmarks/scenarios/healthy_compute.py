"""Control: features precomputed in memory, a large MLP. Nothing to fix in the loader."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main():
    feats = torch.randn(8192, 256)
    labels = torch.randint(0, 10, (8192,))
    loader = DataLoader(TensorDataset(feats, labels), batch_size=128, shuffle=True)
    model = nn.Sequential(nn.Linear(256, 3072), nn.GELU(), nn.Linear(3072, 3072), nn.GELU(), nn.Linear(3072, 10))
    opt = torch.optim.AdamW(model.parameters())
    for epoch in range(20):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


if __name__ == "__main__":
    main()
