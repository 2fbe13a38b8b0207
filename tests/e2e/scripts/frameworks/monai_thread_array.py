"""MONAI ArrayDataset (separate image / label transforms) with ThreadDataLoader for training.

ThreadDataLoader wraps the loader's batches in a background thread (ThreadBuffer); here
num_workers=2 so worker processes feed the thread. Validation uses a plain monai DataLoader.
"""
import numpy as np
import torch
from monai.data import ArrayDataset, DataLoader, ThreadDataLoader
from monai.networks.nets import DenseNet121
from monai.transforms import (
    Compose,
    EnsureChannelFirst,
    RandFlip,
    RandRotate90,
    ScaleIntensity,
    ToTensor,
)

if __name__ == "__main__":
    # CPU-only box: one intra-op thread, the cores go to the loader workers (default OpenMP threads
    # next to busy workers made this loop several times slower on a loaded 2-core machine)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32), dtype=np.float32) * 255 for _ in range(480)]
    labels = rng.integers(0, 2, size=480).astype(np.int64)

    train_imtrans = Compose([
        EnsureChannelFirst(channel_dim="no_channel"),
        ScaleIntensity(),
        RandRotate90(prob=0.5, spatial_axes=(0, 1)),
        RandFlip(prob=0.5, spatial_axis=1),
        ToTensor(),
    ])
    train_labeltrans = Compose([ToTensor(dtype=torch.long)])
    val_imtrans = Compose([EnsureChannelFirst(channel_dim="no_channel"), ScaleIntensity(), ToTensor()])

    train_ds = ArrayDataset(images[:400], train_imtrans, labels[:400], train_labeltrans)
    train_loader = ThreadDataLoader(train_ds, batch_size=8, shuffle=True, num_workers=2, buffer_size=2)
    val_ds = ArrayDataset(images[400:], val_imtrans, labels[400:], train_labeltrans)
    val_loader = DataLoader(val_ds, batch_size=16, num_workers=1)

    model = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
                        block_config=(2, 2, 2, 2))
    loss_function = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)

    for epoch in range(2):
        model.train()
        steps = 0
        for inputs, targets in train_loader:
            optimizer.zero_grad()
            loss = loss_function(model(inputs), targets)
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for val_images, val_labels in val_loader:
                pred = model(val_images).argmax(dim=1)
                correct += (pred == val_labels).sum().item()
                total += len(val_labels)
        print(f"epoch {epoch + 1}: {steps} steps, val acc {correct / total:.3f}")
    print("monai_thread_array done")
