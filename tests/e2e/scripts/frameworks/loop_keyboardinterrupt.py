"""Training in try/except KeyboardInterrupt: on Ctrl-C the checkpoint is saved (to a temp
dir) and the eval loop still runs, as many research scripts do."""
import os
import tempfile

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def evaluate(model, loader):
    model.eval()
    total = correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


if __name__ == "__main__":
    train_loader = DataLoader(TensorDataset(torch.randn(640, 20), torch.randint(0, 4, (640,))),
                              batch_size=8, shuffle=True, num_workers=2)
    val_loader = DataLoader(TensorDataset(torch.randn(128, 20), torch.randint(0, 4, (128,))),
                            batch_size=32, num_workers=2)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ckpt_dir = tempfile.mkdtemp(prefix="ckpt-")
    step = 0
    try:
        for epoch in range(2):
            model.train()
            for x, y in train_loader:
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
    except KeyboardInterrupt:
        print(f"interrupted at step {step}, saving checkpoint")
    path = os.path.join(ckpt_dir, "last.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, path)
    acc = evaluate(model, val_loader)
    os.remove(path)
    os.rmdir(ckpt_dir)
    print(f"loop_keyboardinterrupt done: {step} steps, val acc {acc:.3f}")
