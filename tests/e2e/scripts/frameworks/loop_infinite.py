"""`while True: for batch in loader:` until a global step counter says stop."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Noisy(Dataset):
    def __init__(self, n=320):
        self.x = torch.randn(n, 32)
        self.y = (self.x[:, :4].sum(1) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.05 * torch.randn(32), self.y[i]


if __name__ == "__main__":
    loader = DataLoader(Noisy(), batch_size=8, shuffle=True, num_workers=2)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 2))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    max_steps = 130
    global_step = 0
    done = False
    while True:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            global_step += 1
            if global_step >= max_steps:
                done = True
                break
        if done:
            break
    print(f"loop_infinite done: {global_step} steps, loss {loss.item():.3f}")
