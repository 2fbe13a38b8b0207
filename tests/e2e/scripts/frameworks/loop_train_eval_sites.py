"""Train and val loaders built by ONE helper (the same source line builds both). The eval
loader has MORE batches than a training epoch and is iterated under torch.no_grad every epoch."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_loader(ds, shuffle):
    return DataLoader(ds, batch_size=8, shuffle=shuffle, num_workers=2, drop_last=shuffle)


if __name__ == "__main__":
    train_ds = TensorDataset(torch.randn(400, 16), torch.randint(0, 2, (400,)))   # 50 batches
    val_ds = TensorDataset(torch.randn(720, 16), torch.randint(0, 2, (720,)))     # 90 batches
    train_loader = make_loader(train_ds, shuffle=True)
    val_loader = make_loader(val_ds, shuffle=False)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = 0
    for epoch in range(2):
        model.train()
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            val_loss = sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in val_loader) / len(val_ds)
        print(f"epoch {epoch}: val loss {val_loss:.3f}")
    print(f"loop_train_eval_sites done: {steps} steps")
