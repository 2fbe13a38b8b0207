"""pytorch_lightning (the legacy package name) with a LightningDataModule.

The datamodule builds the datasets in setup() and hands out the loaders; the train and val
loaders come from two different methods of the datamodule.
"""
import tempfile

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split


class SyntheticDataModule(pl.LightningDataModule):
    def __init__(self, batch_size=16, num_workers=2):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1600, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (1600,), generator=g)
        full = TensorDataset(x, y)
        self.train_set, self.val_set = random_split(full, [1440, 160], generator=g)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=32, num_workers=self.num_workers)


class LitClassifier(pl.LightningModule):
    def __init__(self, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * 14 * 14, 10),
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


if __name__ == "__main__":
    pl.seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        dm = SyntheticDataModule()
        model = LitClassifier()
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp)
        trainer.fit(model, datamodule=dm)
        print(f"pl_datamodule done: global_step={trainer.global_step} "
              f"val_loss={float(trainer.callback_metrics['val_loss']):.3f}")
