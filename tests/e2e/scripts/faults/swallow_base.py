"""The loop swallows BaseException (KeyboardInterrupt, SystemExit, our stop: anything) and goes on."""
import torch
from torch.utils.data import DataLoader, TensorDataset

if __name__ == "__main__":
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    n = 0
    while n < 2000:
        try:
            for (x,) in DataLoader(TensorDataset(torch.randn(400, 2)), batch_size=4, num_workers=2):
                opt.zero_grad()
                model(x).sum().backward()
                opt.step()
                n += 1
        except BaseException:
            pass
    print("swallow_base done")
