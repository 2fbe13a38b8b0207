"""A native decoder crashes in a worker (here: reading a null pointer through ctypes)."""
import ctypes

import torch
from torch.utils.data import DataLoader, Dataset


def native_decode(blob):
    if blob is None:
        ctypes.memmove(ctypes.c_char_p(b"x"), None, 8)  # reads address 0
    return torch.zeros(2)


class Blobs(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return native_decode(None if i == 21 else b"ok")


if __name__ == "__main__":
    for x in DataLoader(Blobs(), batch_size=2, num_workers=2):
        x.sum()
