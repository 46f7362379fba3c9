import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

# the real datasets for the real-data tests: $CURVBENCH_TEST_DATA, else ../shared/datasets beside the checkout
SHARED = Path(os.environ.get("CURVBENCH_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "datasets")


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write `array` (uint8) in the IDX layout of MNIST's files."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images whose class shows as a bright 6x6 block at a class-dependent place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 60, size=(n, 28, 28))
    for i, c in enumerate(labels):
        r, col = 2 + (c // 5) * 12, 2 + (c % 5) * 5
        images[i, r : r + 6, col : col + 5] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A data folder in torchvision's MNIST layout: ROOT/MNIST/raw, train files gzipped, test files plain."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    x, y = synthetic_digits(600, 0)
    write_idx(raw / "train-images-idx3-ubyte", x, compress=True)
    write_idx(raw / "train-labels-idx1-ubyte", y, compress=True)
    x, y = synthetic_digits(200, 1)
    write_idx(raw / "t10k-images-idx3-ubyte", x)
    write_idx(raw / "t10k-labels-idx1-ubyte", y)
    return tmp_path / "data"


_TEMPLATES: dict = {}  # key -> a store made (and filled) once per session, copied by every test that wants it


def new_store(db: Path, key=None, fill=None) -> str:
    """A fresh MLflow SQLite store at `db`, its URL: a copy of a store made once per session (a new store spends
    seconds in MLflow's migrations, a copy milliseconds). Without `key` it is empty (no run, no experiment but
    MLflow's Default); with one, it holds what `fill(uri)` logged into it the first time `key` was asked for."""
    import atexit
    import shutil
    import tempfile

    if key not in _TEMPLATES:
        from curvbench.tracking.client import Tracker

        folder = Path(tempfile.mkdtemp(prefix="curvbench-store-"))
        atexit.register(shutil.rmtree, folder, True)
        template = folder / "mlflow.db"
        if key is None:
            Tracker(f"sqlite:///{template}")
        else:
            fill(new_store(template))
        _TEMPLATES[key] = template
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATES[key], db)
    return f"sqlite:///{db}"


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return new_store(tmp_path / "mlruns" / "mlflow.db")


@pytest.fixture
def write_recipe(tmp_path: Path):
    def write(text: str, name: str = "r.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


@pytest.fixture
def float64():
    """Tiny problems in float64: maths compared to 1e-9, not to float32 rounding."""
    import torch

    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)
