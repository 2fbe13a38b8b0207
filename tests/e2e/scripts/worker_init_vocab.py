"""Each worker loads a vocabulary in worker_init_fn (0.6 s); the loader's workers start again
every epoch. Without workers the loop is faster only because it skips the user's init."""
import time

import torch
from torch.utils.data import DataLoader, Dataset

VOCAB = {}


def load_vocab(worker_id):
    time.sleep(0.6)  # reading a vocabulary file
    VOCAB["size"] = 30_000


class Tokens(Dataset):
    def __len__(self):
        return 96

    def __getitem__(self, i):
        return torch.randint(0, 30_000, (16,)), i % 2


def main():
    loader = DataLoader(Tokens(), batch_size=8, num_workers=2, worker_init_fn=load_vocab)
    model = torch.nn.EmbeddingBag(30_000, 8)
    head = torch.nn.Linear(8, 2)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1)
    for epoch in range(40):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(head(model(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    print("worker_init_vocab done")


if __name__ == "__main__":
    main()
