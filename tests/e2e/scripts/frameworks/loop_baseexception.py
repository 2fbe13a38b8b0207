"""`try: ... except BaseException: teardown(); raise` around the loop, as frameworks do
(Lightning's _call_and_handle_interrupt, Accelerate's end_training)."""
import shutil
import tempfile

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Run:
    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="run-")
        self.loader = DataLoader(TensorDataset(torch.randn(640, 12), torch.randn(640, 1)),
                                 batch_size=8, shuffle=True, num_workers=2, persistent_workers=True)
        self.model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 1))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.steps = 0

    def teardown(self):
        # what a framework does on the way out: drop the loader's workers, clean up
        self.loader = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def fit(self, epochs=2):
        try:
            for _ in range(epochs):
                for x, y in self.loader:
                    loss = F.mse_loss(self.model(x), y)
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                    self.steps += 1
        except BaseException:
            self.teardown()
            raise
        self.teardown()


if __name__ == "__main__":
    run = Run()
    run.fit()
    print(f"loop_baseexception done: {run.steps} steps")
