"""Takes secrets on its command line, as training scripts do (--api-key, --wandb-token=...),
and fails with one of them in the message."""
import argparse

import torch
from torch.utils.data import DataLoader, TensorDataset

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--api-key")
    p.add_argument("--wandb-token")
    p.add_argument("--hf-home")
    a = p.parse_args()
    print(f"logging in with token {a.wandb_token} to https://user:hunter22@hub.example/models", flush=True)
    for i, (x,) in enumerate(DataLoader(TensorDataset(torch.zeros(400, 2)), batch_size=2)):
        if i == 40:
            raise RuntimeError(f"upload refused for key {a.api_key} (home {a.hf_home})")
