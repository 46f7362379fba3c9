"""CIFAR-10 with ResNet-18: the `cifar-10-batches-py` pickles read into device tensors; random crop (4-pixel
padding) and horizontal flip as batched tensor ops on the device. channels_last on every device by default (the
same numbers to float32 rounding, 0.92x the step time of a contiguous ResNet-18 on a 2-core CPU for SGD and K-FAC
alike: benchmarks/cifar_speed.py); bf16 autocast by default on CUDA and on a CPU with bf16 instructions (0.49x
float32's SGD step with channels_last on a 2-core AVX-512 BF16 CPU, and no accuracy lost per epoch against
float32 over five real epochs: README, CIFAR-10), refused on a CPU without them."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import numpy as np
import torch

from curvbench import record
from curvbench.errors import CurvbenchError, DatasetMissing
from curvbench.tasks import data_dir as data_dirs
from curvbench.tasks.base import Batch, ClassificationTask, Split

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]


def read_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data, labels = entry["data"], entry.get("labels", entry.get("fine_labels"))
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
            raise DatasetMissing(f"{path}: not a CIFAR-10 batch file ({e.__class__.__name__})") from None
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or labels is None or len(labels) != data.shape[0]:
            raise DatasetMissing(f"{path}: expected 'data' of N x 3072 bytes and N 'labels'")
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() > 9)):
            raise DatasetMissing(f"{path}: expected integer labels 0 to 9, got {labels.dtype} "
                                 f"{labels.min() if labels.size else ''} to {labels.max() if labels.size else ''}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4,
                     memory_format=torch.contiguous_format) -> torch.Tensor:
    """Per-image random translation by up to `pad` pixels (zero fill) and horizontal flip, in one gather."""
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]  # (n, w): flip, then shift
    i = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[i, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX-512 BF16 or AMX), which makes bf16 autocast fast rather than
    emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def effective(options: dict, device: torch.device) -> tuple[bool, bool]:
    """(channels_last, bf16) as they apply on `device`: auto is channels_last everywhere, bf16 on CUDA and on a
    CPU with bf16 instructions (without them bf16 is emulated, slower than float32). bf16 asked for on a CPU
    without bf16 instructions is refused, never silently dropped."""
    native = device.type == "cuda" or cpu_has_bf16()
    channels_last = True if options["channels_last"] == "auto" else bool(options["channels_last"])
    bf16 = native if options["bf16"] == "auto" else bool(options["bf16"])
    if bf16 and not native:
        raise CurvbenchError("task.options.bf16: true, but this CPU has no bf16 instructions (avx512_bf16 or "
                             "amx_bf16); set it to auto or false")
    return channels_last, bf16


class CifarTask(ClassificationTask):
    def __init__(self, *args, options: dict, device: torch.device, **kw):
        super().__init__(*args, **kw)
        self.options, self.device = options, device
        self.channels_last, self.bf16 = effective(options, device)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # what the run's numbers depend on beyond its recipe: logged as tags of every run
        self.run_tags = {record.PRECISION: "bf16 autocast (float32 loss and statistics)" if self.bf16 else "float32",
                         record.MEMORY_FORMAT: "channels_last" if self.channels_last else "contiguous"}

    def build_model(self, needs: frozenset = frozenset()) -> torch.nn.Module:
        from curvbench.models.resnet import ResNet18

        return ResNet18(self.num_classes)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop_flip(x, generator, memory_format=self.memory_format) if self.options["augment"] else x

    def forward(self, model, batch: Batch) -> torch.Tensor:
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            out = model(batch.inputs)
        return out.float()


def _to_tensor(x: np.ndarray, device) -> torch.Tensor:
    t = torch.from_numpy(x).to(device=device, dtype=torch.float32).div_(255)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return (t - mean) / std


def _find(root: Path) -> Path | None:
    for folder in (root / "cifar-10-batches-py", root):
        if all((folder / n).is_file() for n in TRAIN_FILES + TEST_FILES):
            return folder
    return None


def load_cifar10(config, device) -> CifarTask:
    root = data_dirs.resolve(config.data_dir)
    folder = _find(root)
    failure = "download disabled"
    if folder is None and config.download:
        try:
            import torchvision

            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
            folder = _find(root)
        except Exception as e:  # noqa: BLE001 - no network, a proxy, a full disk: reported alike
            failure = " ".join(str(e).split())[:120] or e.__class__.__name__
    if folder is None:
        raise DatasetMissing(
            f"cifar10: {', '.join(TRAIN_FILES[:1])}..{TRAIN_FILES[-1]}, test_batch not found in "
            f"{root / 'cifar-10-batches-py'} and could not be downloaded ({failure}); put the python-version "
            f"batches there, or point --data-dir / CURVBENCH_DATA at the folder holding cifar-10-batches-py/"
        )
    channels_last, _ = effective(config.options, device)  # a bf16 the CPU cannot do fails before the data is read
    xtr, ytr = read_batches(folder, TRAIN_FILES)
    xte, yte = read_batches(folder, TEST_FILES)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    train = Split(_to_tensor(xtr, device).contiguous(memory_format=memory), torch.from_numpy(ytr).to(device))
    test = Split(_to_tensor(xte, device).contiguous(memory_format=memory), torch.from_numpy(yte).to(device))
    return CifarTask("cifar10", config.model, config.metric, train, test, 10, options=config.options, device=device)
