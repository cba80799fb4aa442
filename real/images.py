"""Image sources for ``real/data.py``: scikit-learn digits, the CIFAR-10 python folder, an image folder.

In-memory sets (digits, CIFAR-10) are resized to the model's ``image_size`` and channels once and
normalised per channel with the training split's statistics. An image folder (ImageNet's layout:
one sub-folder per class) is decoded on demand, a batch at a time on a thread pool (PIL releases the
GIL while decoding), resized on the shorter side and centre-cropped, with ImageNet's mean and std.
No augmentation: the harness measures time, and equal data keeps the algorithms comparable.
"""

from __future__ import annotations

import functools
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.workload import ModelSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLIT_SEED = 0
"""Fixed: the held-out split is a property of the data set, the same for every run seed."""


def load(source: str, path: str, model: ModelSpec, eval_fraction: float):
    """(train, held_out) sample sets of an image source, fitted to ``model``."""
    if source == "digits":
        x, y = _digits()
        return _in_memory(x, y, None, model, eval_fraction)
    if source == "cifar10":
        return _in_memory(*_cifar10(path), model, eval_fraction)
    return _image_folder(path, model, eval_fraction)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16, 10 classes): offline. Cached:
    importing scikit-learn takes seconds, and the tensors are never written to."""
    try:
        from sklearn.datasets import load_digits  # takes seconds: only for the digits source
    except ImportError:
        raise ConfigError("needs scikit-learn (pip install scikit-learn)", key="workload.data.source",
                          value="digits") from None
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    return x, torch.tensor(digits.target, dtype=torch.long)


def _cifar10(path: str):
    """The python-pickle release (``cifar-10-batches-py``): data_batch_1..5 train, test_batch held out."""
    root = Path(path).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"

    def read(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        file = root / name
        if not file.is_file():
            raise ConfigError(f"CIFAR-10 file {file} not found", key="workload.data.path", value=path)
        with open(file, "rb") as f:
            entry = pickle.load(f, encoding="bytes")  # the release's own format: trusted local files
        x = torch.tensor(np.asarray(entry[b"data"], dtype=np.uint8)).view(-1, 3, 32, 32).float() / 255.0
        return x, torch.tensor(entry[b"labels"], dtype=torch.long)

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    test = read("test_batch")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), test


@dataclass(frozen=True)
class Tensors:
    """Samples held in memory: inputs[i], targets[i]."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[ids], self.targets[ids]


def _in_memory(x: torch.Tensor, y: torch.Tensor, test, model: ModelSpec, eval_fraction: float):
    _check_classes(int(y.max()) + 1, model)
    if test is None:  # hold out a fixed random share
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_eval = max(1, round(len(y) * eval_fraction))
        test = (x[perm[:n_eval]], y[perm[:n_eval]])
        x, y = x[perm[n_eval:]], y[perm[n_eval:]]
    x, tx = _fit(x, model), _fit(test[0], model)
    mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Tensors((x - mean) / std, y), Tensors((tx - mean) / std, test[1])


def _fit(x: torch.Tensor, model: ModelSpec) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] -> the model's channels (grey <-> RGB) and square size."""
    if x.shape[1] != model.in_channels:
        x = x.mean(dim=1, keepdim=True) if model.in_channels == 1 else x[:, :1].expand(
            -1, model.in_channels, -1, -1)
    if x.shape[-1] != model.image_size or x.shape[-2] != model.image_size:
        size = (model.image_size, model.image_size)
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()


def _check_classes(classes: int, model: ModelSpec) -> None:
    if classes > model.num_classes:
        raise ConfigError(f"the data have {classes} classes; the model has fewer",
                          key="workload.model.num_classes", value=model.num_classes)


@dataclass(frozen=True)
class ImageFiles:
    """Images decoded from files on demand: shorter side resized to the model's size, centre crop."""

    files: tuple[Path, ...]
    labels: torch.Tensor
    size: int
    channels: int
    pool: ThreadPoolExecutor = field(repr=False, compare=False,
                                     default_factory=lambda: ThreadPoolExecutor(min(8, os.cpu_count() or 1)))

    def __len__(self) -> int:
        return len(self.files)

    def get(self, ids: torch.Tensor):
        x = torch.stack(list(self.pool.map(self._decode, ids.tolist())))
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if self.channels != 3:
            mean, std = (0.5,) * self.channels, (0.25,) * self.channels
        mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        return (x - mean_t) / std_t, self.labels[ids]

    def _decode(self, i: int) -> torch.Tensor:
        from PIL import Image  # comes with torchvision or matplotlib, needed only for image folders

        with Image.open(self.files[i]) as img:
            img = img.convert("L" if self.channels == 1 else "RGB")
            scale = self.size / min(img.size)
            w, h = max(self.size, round(img.width * scale)), max(self.size, round(img.height * scale))
            img = img.resize((w, h), Image.BILINEAR)
            left, top = (w - self.size) // 2, (h - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
            arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr.copy())
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        return t.expand(self.channels, -1, -1).contiguous() if t.shape[0] != self.channels else t


def _image_folder(path: str, model: ModelSpec, eval_fraction: float):
    """``path/<class>/<image>``: classes are the sorted sub-folder names (torchvision ImageFolder)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError("image folder not found", key="workload.data.path", value=path)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(f for f in (root / name).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ConfigError("holds no class sub-folders with images", key="workload.data.path", value=path)
    _check_classes(len(classes), model)
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_eval = max(1, round(len(files) * eval_fraction))
    labels_t = torch.tensor(labels, dtype=torch.long)

    def subset(ids: torch.Tensor) -> ImageFiles:
        return ImageFiles(tuple(files[i] for i in ids.tolist()), labels_t[ids], model.image_size,
                          model.in_channels)

    return subset(perm[n_eval:]), subset(perm[:n_eval])
