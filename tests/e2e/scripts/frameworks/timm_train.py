"""A timm training script in the shape of timm's train.py, on random PIL images.

create_loader builds timm's transforms (is_training=True: RandomResizedCrop, flip, color
jitter; with the prefetcher, normalization and random erasing run in the main process on the
"device"). Train loader: PrefetchLoader over a MultiEpochsDataLoader with persistent
workers. Eval loader: a plain torch DataLoader (no prefetcher). Training is wrapped in
`try: ... except KeyboardInterrupt: pass`, then a final evaluation and a summary, as in
timm's train.py.
"""
import time
from collections import OrderedDict

import numpy as np
import timm
import torch
from PIL import Image
from timm.data import create_loader, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import AverageMeter, accuracy
from torch.utils.data import Dataset


class RandomImageDataset(Dataset):
    """Stands in for timm.data.ImageDataset: PIL images in, `self.transform` set by create_loader."""

    def __init__(self, n, num_classes=10, size=40, seed=0):
        rng = np.random.default_rng(seed)
        self.arrays = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        self.targets = rng.integers(0, num_classes, size=n)
        self.transform = None
        self.target_transform = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img = Image.fromarray(self.arrays[index]).convert("RGB")
        target = int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


def train_one_epoch(epoch, model, loader, optimizer, loss_fn, lr_scheduler, device, prefetcher):
    losses_m = AverageMeter()
    model.train()
    last_idx = len(loader) - 1
    num_updates = epoch * len(loader)
    for batch_idx, (input, target) in enumerate(loader):
        last_batch = batch_idx == last_idx
        if not prefetcher:
            input, target = input.to(device), target.to(device)
        output = model(input)
        loss = loss_fn(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        num_updates += 1
        losses_m.update(loss.item(), input.size(0))
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=num_updates, metric=losses_m.avg)
        if last_batch:
            break
    return OrderedDict([("loss", losses_m.avg)])


def validate(model, loader, loss_fn, device):
    losses_m, top1_m = AverageMeter(), AverageMeter()
    model.eval()
    with torch.no_grad():
        for input, target in loader:
            input, target = input.to(device), target.to(device)
            output = model(input)
            losses_m.update(loss_fn(output, target).item(), input.size(0))
            top1_m.update(accuracy(output, target, topk=(1,))[0].item(), output.size(0))
    return OrderedDict([("loss", losses_m.avg), ("top1", top1_m.avg)])


def main():
    device = torch.device("cpu")
    # CPU-only box: one intra-op thread, the cores go to the loader workers (with the default
    # two OpenMP threads competing with two busy workers, each step was ~7x slower here)
    torch.set_num_threads(1)
    model = timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=32)
    data_config = resolve_data_config({"input_size": (3, 32, 32), "crop_pct": 0.9}, model=model)

    dataset_train = RandomImageDataset(800)
    dataset_eval = RandomImageDataset(96, seed=1)
    loader_train = create_loader(
        dataset_train,
        input_size=data_config["input_size"],
        batch_size=16,
        is_training=True,
        use_prefetcher=True,
        re_prob=0.25,
        interpolation="random",
        mean=data_config["mean"],
        std=data_config["std"],
        num_workers=2,
        device=device,
        use_multi_epochs_loader=True,
        persistent_workers=True,
    )
    loader_eval = create_loader(
        dataset_eval,
        input_size=data_config["input_size"],
        batch_size=32,
        is_training=False,
        use_prefetcher=False,
        interpolation=data_config["interpolation"],
        mean=data_config["mean"],
        std=data_config["std"],
        crop_pct=data_config["crop_pct"],
        num_workers=1,
        device=device,
        persistent_workers=False,
    )

    optimizer = create_optimizer_v2(model, opt="sgd", lr=0.05, weight_decay=2e-5, momentum=0.9)
    lr_scheduler, num_epochs = create_scheduler_v2(optimizer, sched="cosine", num_epochs=2, warmup_epochs=0,
                                                   step_on_epochs=False, updates_per_epoch=len(loader_train))
    train_loss_fn = LabelSmoothingCrossEntropy(smoothing=0.1)
    validate_loss_fn = torch.nn.CrossEntropyLoss()

    best_metric, best_epoch = None, None
    start = time.time()
    try:
        for epoch in range(num_epochs):
            train_metrics = train_one_epoch(epoch, model, loader_train, optimizer, train_loss_fn, lr_scheduler,
                                            device, prefetcher=True)
            eval_metrics = validate(model, loader_eval, validate_loss_fn, device)
            if best_metric is None or eval_metrics["top1"] > best_metric:
                best_metric, best_epoch = eval_metrics["top1"], epoch
            print(f"epoch {epoch}: train loss {train_metrics['loss']:.3f} eval top1 {eval_metrics['top1']:.1f}")
    except KeyboardInterrupt:
        pass

    final = validate(model, loader_eval, validate_loss_fn, device)
    print(f"*** Best metric: {best_metric} (epoch {best_epoch}); final top1 {final['top1']:.1f} "
          f"in {time.time() - start:.1f}s")
    print("timm_train done")


if __name__ == "__main__":
    main()
