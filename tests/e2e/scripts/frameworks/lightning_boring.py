"""Lightning 2.x BoringModel-style script: the LightningModule owns its loaders.

train_dataloader / val_dataloader are methods; Trainer.fit calls them, wraps the loaders
(_DataFetcher, CombinedLoader) and iterates them. Lightning runs 2 sanity-check val batches
before training and a full validation pass at the end of every epoch.
"""
import tempfile

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class RandomDataset(Dataset):
    def __init__(self, size, length):
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index):
        return self.data[index]

    def __len__(self):
        return self.len


class BoringModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        loss = self(batch).pow(2).mean()
        self.log("train_loss", loss)
        return {"loss": loss}

    def validation_step(self, batch, batch_idx):
        loss = self(batch).pow(2).mean()
        self.log("valid_loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(RandomDataset(32, 800), batch_size=8, shuffle=True, num_workers=2)

    def val_dataloader(self):
        return DataLoader(RandomDataset(32, 64), batch_size=16, num_workers=1)


if __name__ == "__main__":
    model = BoringModel()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_epochs=2,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            default_root_dir=tmp,
        )
        trainer.fit(model)
    print(f"lightning_boring done: global_step={trainer.global_step}")
