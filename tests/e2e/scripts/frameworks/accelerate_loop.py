"""A plain training loop driven by HF Accelerate (the "nlp_example.py" shape).

accelerator.prepare() is called ONCE with the model, the optimizer and both loaders; it
returns new loader objects (DataLoaderShard) that the loops iterate.
"""
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset


class RegressionDataset(Dataset):
    def __init__(self, n, dim=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.randn(dim, 1, generator=g)
        self.y = self.x @ w + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class MLP(nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.net(x)


def training_function(num_epochs=2, batch_size=8, lr=1e-3):
    accelerator = Accelerator(cpu=True)
    set_seed(42)
    train_loader = DataLoader(RegressionDataset(800), shuffle=True, batch_size=batch_size, num_workers=2)
    eval_loader = DataLoader(RegressionDataset(128, seed=1), shuffle=False, batch_size=32, num_workers=2)
    model = MLP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    for epoch in range(num_epochs):
        model.train()
        for step, batch in enumerate(train_loader):
            outputs = model(batch["x"])
            loss = F.mse_loss(outputs, batch["y"])
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

        model.eval()
        total, count = 0.0, 0
        for step, batch in enumerate(eval_loader):
            with torch.no_grad():
                outputs = model(batch["x"])
            preds, refs = accelerator.gather_for_metrics((outputs, batch["y"]))
            total += F.mse_loss(preds, refs, reduction="sum").item()
            count += len(refs)
        accelerator.print(f"epoch {epoch}: eval mse {total / count:.4f}")
    accelerator.end_training()


if __name__ == "__main__":
    training_function()
    print("accelerate_loop done")
