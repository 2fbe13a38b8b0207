"""Workload for benchmarks/gpu_check.py (a): a GPU-bound training step that times itself.

    python gpu_step.py DEVICE WARMUP STEPS BATCH SIZE [tiny]

A ResNet-50 (torchvision's when importable, else the same bottleneck stack built here) on
random batches already on the device, bf16 autocast, SGD. The DataLoader only hands out
batch numbers (num_workers=0, batch_size=None): the step, not the data, sets the pace, and
loaderdoctor's hooks (CUDA events at each batch boundary, never a synchronize) have a loop to measure.
Prints `model=...` and `steps_per_s=X` for the timed steps.
"""
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def resnet(base=64, blocks=(3, 4, 6, 3), classes=1000):
    layers = [nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    cin = base
    for k, n in enumerate(blocks):
        for j in range(n):
            layers.append(Bottleneck(cin, base * 2**k, 2 if j == 0 and k > 0 else 1))
            cin = base * 2**k * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def build(tiny):
    if tiny:
        return resnet(8, (1, 1, 1, 1), 10), "hand-built bottleneck ResNet (tiny)"
    try:
        import torchvision

        return torchvision.models.resnet50(weights=None), "torchvision resnet50"
    except Exception:
        return resnet(), "hand-built ResNet-50 (bottleneck 3-4-6-3)"


class Steps(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def main():
    device, warmup, steps, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    tiny = len(sys.argv) > 6 and sys.argv[6] == "tiny"
    torch.manual_seed(0)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    model, name = build(tiny)
    model = model.to(device, memory_format=torch.channels_last)
    classes = model[-1].out_features if isinstance(model, nn.Sequential) else 1000
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pool = [torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last) for _ in range(4)]
    labels = [torch.randint(0, classes, (batch,), device=device) for _ in range(4)]
    print(f"model={name} params={sum(p.numel() for p in model.parameters())} batch={batch} size={size}", flush=True)

    def step(i):
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            out = model(pool[i % 4])
        loss = nn.functional.cross_entropy(out.float(), labels[i % 4])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    it = iter(DataLoader(Steps(warmup + steps), batch_size=None, num_workers=0))
    for _ in range(warmup):
        step(next(it))
    sync()
    t = time.perf_counter()
    n = 0
    for i in it:
        step(i)
        n += 1
    sync()
    print(f"steps_per_s={n / (time.perf_counter() - t):.4f}", flush=True)


if __name__ == "__main__":
    main()
