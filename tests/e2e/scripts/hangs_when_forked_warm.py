"""Runs fine as a fresh interpreter; hangs in its dataset when torch was imported before the
script started (forked from loaderdoctor's warm process): a stand-in for state a warm start
cannot reproduce, such as a lock a package's native thread held when the warm process forked."""
import sys
import threading

FORKED_WARM = "torch" in sys.modules  # before the script's own import: only a warm start has it

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402


class Items(Dataset):
    def __len__(self):
        return 4096

    def __getitem__(self, i):
        if FORKED_WARM and i % 64 == 5:
            threading.Event().wait()  # never set
        return torch.randn(16), i % 4


def main():
    loader = DataLoader(Items(), batch_size=8)
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
