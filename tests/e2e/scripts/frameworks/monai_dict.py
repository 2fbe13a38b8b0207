"""MONAI dictionary pipeline (the spleen/MedNIST tutorial shape) on random 2-D volumes.

monai.data.Dataset applies a Compose of dictionary transforms; monai.data.DataLoader is a
torch DataLoader subclass (list_data_collate, worker seeding). Validation every epoch
under torch.no_grad on a few batches.
"""
import numpy as np
import torch
from monai.data import DataLoader, Dataset, decollate_batch
from monai.losses import DiceLoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from monai.transforms import (
    AsDiscrete,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    RandFlipd,
    RandRotate90d,
    ScaleIntensityd,
)


def make_items(n, rng):
    items = []
    for _ in range(n):
        img = rng.normal(100.0, 20.0, size=(16, 16)).astype(np.float32)
        seg = (img > 110).astype(np.float32)
        items.append({"img": img, "seg": seg})
    return items


if __name__ == "__main__":
    # not monai.utils.set_determinism: its cudnn.deterministic=True makes CPU convolutions ~20x slower
    torch.manual_seed(0)
    # CPU-only box: one intra-op thread, the cores go to the loader workers (with the default two
    # OpenMP threads next to two busy workers this loop ran ~4x slower here)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train_files, val_files = make_items(400, rng), make_items(32, rng)

    train_transforms = Compose([
        EnsureChannelFirstd(keys=["img", "seg"], channel_dim="no_channel"),
        ScaleIntensityd(keys="img"),
        RandRotate90d(keys=["img", "seg"], prob=0.5, spatial_axes=(0, 1)),
        RandFlipd(keys=["img", "seg"], prob=0.5, spatial_axis=0),
        EnsureTyped(keys=["img", "seg"], track_meta=False),
    ])
    val_transforms = Compose([
        EnsureChannelFirstd(keys=["img", "seg"], channel_dim="no_channel"),
        ScaleIntensityd(keys="img"),
        EnsureTyped(keys=["img", "seg"], track_meta=False),
    ])

    train_ds = Dataset(data=train_files, transform=train_transforms)
    train_loader = DataLoader(train_ds, batch_size=8, shuffle=True, num_workers=2)
    val_ds = Dataset(data=val_files, transform=val_transforms)
    val_loader = DataLoader(val_ds, batch_size=8, num_workers=1)

    model = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 16), strides=(2, 2),
                 num_res_units=1)
    loss_function = DiceLoss(sigmoid=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    dice_metric = DiceMetric(include_background=True, reduction="mean")
    post_pred = Compose([AsDiscrete(threshold=0.5)])

    max_epochs = 2
    best_metric = -1.0
    for epoch in range(max_epochs):
        model.train()
        epoch_loss, step = 0.0, 0
        for batch_data in train_loader:
            step += 1
            inputs, labels = batch_data["img"], batch_data["seg"]
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = loss_function(outputs, labels)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
        epoch_loss /= step

        model.eval()
        with torch.no_grad():
            for val_data in val_loader:
                val_outputs = torch.sigmoid(model(val_data["img"]))
                val_outputs = [post_pred(i) for i in decollate_batch(val_outputs)]
                dice_metric(y_pred=val_outputs, y=decollate_batch(val_data["seg"]))
            metric = dice_metric.aggregate().item()
            dice_metric.reset()
        best_metric = max(best_metric, metric)
        print(f"epoch {epoch + 1} loss {epoch_loss:.4f} val dice {metric:.4f}")
    print(f"monai_dict done: best dice {best_metric:.4f}")
