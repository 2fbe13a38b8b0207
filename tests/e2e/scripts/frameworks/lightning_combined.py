"""Two training loaders combined with Lightning's CombinedLoader (mode "max_size_cycle").

training_step receives a dict {"labeled": batch, "unlabeled": batch}; the shorter loader
is cycled (re-iterated) until the longer one is exhausted.
"""
import tempfile

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class SemiSupervised(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 4)

    def training_step(self, batch, batch_idx):
        x, y = batch["labeled"]
        (u,) = batch["unlabeled"]
        sup = F.cross_entropy(self.head(self.encoder(x)), y)
        # consistency between two noisy views of the unlabeled batch
        z1 = self.encoder(u + 0.1 * torch.randn_like(u))
        z2 = self.encoder(u + 0.1 * torch.randn_like(u))
        loss = sup + 0.5 * F.mse_loss(z1, z2)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.head(self.encoder(x)).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return [opt], [sched]

    def train_dataloader(self):
        labeled = TensorDataset(torch.randn(320, 20), torch.randint(0, 4, (320,)))
        unlabeled = TensorDataset(torch.randn(1200, 20))
        loaders = {
            "labeled": DataLoader(labeled, batch_size=8, shuffle=True, num_workers=2),
            "unlabeled": DataLoader(unlabeled, batch_size=16, shuffle=True, num_workers=2),
        }
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(96, 20), torch.randint(0, 4, (96,))), batch_size=32)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp)
        trainer.fit(SemiSupervised())
        print(f"lightning_combined done: global_step={trainer.global_step}")
