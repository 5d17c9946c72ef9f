"""torchvision's ResNet-18 (weights=None, 10 classes) on CIFAR-10 or generated images on disk.

Data: CIFAR-10 when you have it (`cifar-10-batches-py/` under the data root, `$LRBS_DATA_ROOT`
or ~/.cache/lrbs/data; nothing is downloaded). Otherwise a generated stand-in: 32x32 RGB
images in 10 classes (a class's own colour and stripe angle, random phase and frequency, plus
noise: learnable, but not in one step), written once as PNG files in class folders under the
data root and read back through `torchvision.datasets.ImageFolder`. Either way `data()` returns
Datasets that decode images one by one. lrbs decodes them once and holds them on the device
when they fit (`--data-path auto`); `--data-path stream` reads them through a DataLoader as it
trains instead, as it would a set too large to hold.

Defaults: 2000 training and 500 validation images (set `LRBS_EXAMPLE_IMAGES` for another
training count; validation is a quarter of it), generated from seed 0. The model is
torchvision's ResNet-18 with a 3x3 stride-2 first convolution in place of the 7x7 one meant
for 224x224 images, keeping its max-pool: an 8x8 map enters the first block, so a step costs
about as much as on torchvision's 32x32 path. `LRBS_RESNET_STEM=cifar` gives the usual CIFAR
stem instead (3x3 stride 1, no max-pool: 16x the compute, for a GPU). Cross-entropy and
accuracy (lrbs's defaults); the experiment's optimizer.

Cost: 11 million parameters. On 2 CPU cores a training step at batch 32 takes about 1 CPU
second, so a range test there wants fewer, smaller steps than the defaults (100 at batch 64):

    python -m lrbs lr-find --workload examples/resnet18_cifar.py --batch-size 32 --iterations 50
    python -m lrbs lr-find --workload examples/resnet18_cifar.py --data-path stream --json
"""

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn
from torchvision import datasets, models, transforms

SEED = 0
N_TRAIN = int(os.environ.get("LRBS_EXAMPLE_IMAGES", "2000"))
N_VAL = max(N_TRAIN // 4, 10)
# CIFAR-10's per-channel mean and spread; the generated images are scaled alike
NORMALISE = transforms.Normalize((0.491, 0.482, 0.447), (0.247, 0.243, 0.262))


def data_root() -> Path:
    return Path(os.environ.get("LRBS_DATA_ROOT", Path.home() / ".cache" / "lrbs" / "data"))


def model() -> nn.Module:
    net = models.resnet18(weights=None, num_classes=10)
    if os.environ.get("LRBS_RESNET_STEM") == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
    return net


def data():
    transform = transforms.Compose([transforms.ToTensor(), NORMALISE])
    root = data_root()
    if (root / "cifar-10-batches-py" / "test_batch").exists():
        train = datasets.CIFAR10(str(root), train=True, transform=transform, download=False)
        val = datasets.CIFAR10(str(root), train=False, transform=transform, download=False)
        return train, val
    folder = generated_images(root / f"lrbs-example-images32-seed{SEED}-{N_TRAIN}")
    train = datasets.ImageFolder(str(folder / "train"), transform=transform)
    val = datasets.ImageFolder(str(folder / "val"), transform=transform)
    return train, val


def draw(rng: np.random.Generator, label: int) -> np.ndarray:
    """One 32x32 RGB image of class `label`: stripes at the class's angle in its colour."""
    colours = np.random.default_rng(1234).uniform(0.2, 1.0, size=(10, 3))  # fixed per class
    angle = label * np.pi / 10 + rng.normal(0, 0.08)
    freq = rng.uniform(0.15, 0.35)
    yy, xx = np.mgrid[0:32, 0:32]
    wave = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    contrast = rng.uniform(0.05, 0.3)
    img = 0.45 + contrast * wave[..., None] * colours[label] + rng.normal(0, 0.25, size=(32, 32, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def generated_images(folder: Path) -> Path:
    """Write the generated set once (to a temporary folder, renamed when complete)."""
    if folder.exists():
        return folder
    rng = np.random.default_rng(SEED)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        for i in range(n):
            label = i % 10
            path = tmp / split / f"class{label}" / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw(rng, label)).save(path)
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first: its copy is the same images
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
