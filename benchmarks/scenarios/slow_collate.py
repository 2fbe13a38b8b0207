"""Variable-length token sequences padded by a collate_fn written element by element."""
import random

import torch
from torch.utils.data import DataLoader, Dataset


class Sentences(Dataset):
    def __len__(self):
        return 100_000

    def __getitem__(self, i):
        return [random.randrange(30000) for _ in range(random.randint(50, 200))]


def pad_collate(batch):
    longest = max(len(s) for s in batch)
    out = torch.zeros(len(batch), longest, dtype=torch.long)
    for r, seq in enumerate(batch):
        for c, tok in enumerate(seq):
            out[r, c] = tok  # one tensor write per token
    return out


if __name__ == "__main__":
    emb = torch.nn.EmbeddingBag(30000, 16)
    loader = DataLoader(Sentences(), batch_size=32, collate_fn=pad_collate, num_workers=1)
    for tokens in loader:
        emb(tokens).sum().backward()
