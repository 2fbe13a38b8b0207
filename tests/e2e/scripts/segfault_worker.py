"""A worker dies in native code: a null pointer read through ctypes."""
import ctypes

import torch
from torch.utils.data import DataLoader, Dataset


def decode_record(i):
    if i == 10:
        return ctypes.string_at(0)  # reads address 0: SIGSEGV
    return i


class Records(Dataset):
    def __len__(self):
        return 200

    def __getitem__(self, i):
        decode_record(i)
        return torch.zeros(3)


if __name__ == "__main__":
    for x in DataLoader(Records(), batch_size=2, num_workers=2):
        x.sum()
