"""Iteration-based training: batches pulled with next(it); the iterator is re-created on
StopIteration (the "infinite dataloader" idiom of GAN / detection codebases)."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main(max_iters=120):
    ds = TensorDataset(torch.randn(480, 24), torch.randint(0, 3, (480,)))
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, drop_last=True)
    val_loader = DataLoader(TensorDataset(torch.randn(64, 24), torch.randint(0, 3, (64,))), batch_size=32)
    model = nn.Sequential(nn.Linear(24, 64), nn.ReLU(), nn.Linear(64, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_iters)

    it = iter(loader)
    epoch = 0
    for i in range(max_iters):
        try:
            x, y = next(it)
        except StopIteration:
            epoch += 1
            it = iter(loader)
            x, y = next(it)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (i + 1) % 60 == 0:
            model.eval()
            with torch.no_grad():
                acc = sum((model(vx).argmax(1) == vy).sum().item() for vx, vy in val_loader) / 64
            model.train()
            print(f"iter {i + 1} (epoch {epoch}): loss {loss.item():.3f} val acc {acc:.3f}")
    print(f"loop_next done: {max_iters} iterations")


if __name__ == "__main__":
    main()
