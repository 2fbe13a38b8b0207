"""Imports torch, sets a variable, imports an installed package (which reads it at import),
then a module of its own and a training loop with one fork worker. Prints where each was
imported."""
import os

import torch

os.environ["LD_WARM_FLAG"] = "set-by-script"
import ldwarmpkg  # noqa: E402
import ldwarmlocal  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

if __name__ == "__main__":
    print("pkg", ldwarmpkg.FLAG, "here" if ldwarmpkg.PID == os.getpid() else "ahead",
          "local", "here" if ldwarmlocal.PID == os.getpid() else "ahead",
          "set", os.environ.get("LD_WARM_SET_BY_PKG"), flush=True)
    model = torch.nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = TensorDataset(torch.randn(512, 8), torch.randint(0, 2, (512,)))
    for epoch in range(100):
        for x, y in DataLoader(data, batch_size=16, num_workers=1):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
