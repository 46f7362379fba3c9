"""Reader for the IDX files of MNIST and Fashion-MNIST (plain or .gz), with checks that name the file."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from curvbench.errors import DatasetMissing

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def find(raw: Path, name: str) -> Path | None:
    """`name` or `name.gz` inside `raw`, whichever exists."""
    for candidate in (raw / name, raw / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read(path: Path) -> torch.Tensor:
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DatasetMissing(f"{path}: not a complete gzip file ({' '.join(str(e).split())}); fetch it again") from None
    except OSError as e:
        raise DatasetMissing(f"{path}: cannot read ({e.strerror or e.__class__.__name__})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES or not 1 <= data[3] <= 4:
        raise DatasetMissing(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=_DTYPES[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DatasetMissing(f"{path}: truncated IDX file (header says {shape}, found {arr.size} values)")
    return torch.from_numpy(arr.reshape(shape).astype(arr.dtype.newbyteorder("="), copy=True))
