"""MNIST, Fashion-MNIST and the offline mnist-mini, with LeNet-5. Data held as normalised tensors on the device."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from curvbench.errors import DatasetMissing
from curvbench.tasks import data_dir as data_dirs
from curvbench.tasks import idx
from curvbench.tasks.base import ClassificationTask, Split

# (torchvision dataset class, folder torchvision uses, mean, std of the training pixels)
_FAMILY = {
    "mnist": ("MNIST", "MNIST", 0.1307, 0.3081),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST", 0.2860, 0.3530),
}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class ImageTask(ClassificationTask):
    def build_model(self, needs: frozenset = frozenset()) -> torch.nn.Module:
        from curvbench.models.lenet import LeNet5

        return LeNet5(num_classes=self.num_classes)


def _raw_folders(root: Path, folder: str) -> list[Path]:
    # torchvision's layout is ROOT/MNIST/raw; ROOT/raw and ROOT itself are accepted too.
    return [root / folder / "raw", root / "raw", root]


def _locate(root: Path, folder: str, split: str) -> tuple[Path, Path] | None:
    for raw in _raw_folders(root, folder):
        images, labels = (idx.find(raw, f) for f in _FILES[split])
        if images and labels:
            return images, labels
    return None


def _download(root: Path, dataset: str) -> str | None:
    """torchvision's downloader; returns why it failed, or None."""
    import torchvision

    cls = getattr(torchvision.datasets, _FAMILY[dataset][0])
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # no network, a proxy, a full disk: all end the same way for the user
        return " ".join(str(e).split())[:120] or e.__class__.__name__
    return None


def _to_images(x: torch.Tensor, mean: float, std: float, device) -> torch.Tensor:
    return ((x.to(device=device, dtype=torch.float32) / 255.0 - mean) / std).unsqueeze(1)  # N,1,28,28


def check_images(images: Path, labels: Path, x: torch.Tensor, y: torch.Tensor, classes: int = 10) -> None:
    """What LeNet-5 and the loss need: N 28x28 unsigned-byte images and N integer labels 0..classes-1."""
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DatasetMissing(f"{images}: expected N images of HxW and N labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise DatasetMissing(f"{images}: holds no images; expected the split's N > 0 images")
    if tuple(x.shape[1:]) != (28, 28) or x.dtype != torch.uint8:
        raise DatasetMissing(f"{images}: expected 28x28 images of unsigned bytes (the MNIST layout), got "
                             f"{x.shape[1]}x{x.shape[2]} of {str(x.dtype).replace('torch.', '')}")
    if x.dtype.is_floating_point or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise DatasetMissing(f"{labels}: expected integer class labels, got {str(y.dtype).replace('torch.', '')}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DatasetMissing(f"{labels}: expected labels 0 to {classes - 1}, found {int(y.min())} to {int(y.max())}")


def _load_family(config, device, dataset: str) -> ImageTask:
    _, folder, mean, std = _FAMILY[dataset]
    root = data_dirs.resolve(config.data_dir)
    found = {s: _locate(root, folder, s) for s in ("train", "test")}
    if not all(found.values()) and config.download:
        failure = _download(root, dataset)
        found = {s: _locate(root, folder, s) for s in ("train", "test")}
    else:
        failure = "download disabled"
    missing = [s for s, f in found.items() if f is None]
    if missing:
        looked = ", ".join(str(p) for p in _raw_folders(root, folder)[:2])
        names = ", ".join(f + "[.gz]" for s in missing for f in _FILES[s])
        raise DatasetMissing(
            f"{dataset}: {names} not found in {looked} and could not be downloaded ({failure}); "
            f"put the files there, or point --data-dir / CURVBENCH_DATA at a folder holding {folder}/raw/"
        )
    splits = {}
    for s, (images, labels) in found.items():
        x, y = idx.read(images), idx.read(labels)
        check_images(images, labels, x, y)
        splits[s] = Split(_to_images(x, mean, std, device), y.to(device=device, dtype=torch.long))
    return ImageTask(dataset, config.model, config.metric, splits["train"], splits["test"], num_classes=10)


def load_mnist(config, device) -> ImageTask:
    return _load_family(config, device, "mnist")


def load_fashion_mnist(config, device) -> ImageTask:
    return _load_family(config, device, "fashion-mnist")


MINI_TRAIN = 8000  # of the 10,000 shipped digits; the other 2,000 are the test split


def load_mnist_mini(config, device) -> ImageTask:
    """The 10,000 real MNIST test digits shipped in the package, split by a fixed permutation."""
    folder = resources.files("curvbench") / "data" / "mnist_mini"
    x = idx.read(Path(str(folder / "t10k-images-idx3-ubyte.gz")))
    y = idx.read(Path(str(folder / "t10k-labels-idx1-ubyte.gz")))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(20240101))
    _, _, mean, std = _FAMILY["mnist"]
    x, y = _to_images(x[perm], mean, std, device), y[perm].to(device=device, dtype=torch.long)
    train, test = Split(x[:MINI_TRAIN], y[:MINI_TRAIN]), Split(x[MINI_TRAIN:], y[MINI_TRAIN:])
    return ImageTask("mnist-mini", config.model, config.metric, train, test, num_classes=10)
