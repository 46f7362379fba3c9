"""Where datasets live: --data-dir, else $CURVBENCH_DATA, else a user cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def resolve(data_dir: str | None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("CURVBENCH_DATA"):
        return Path(os.environ["CURVBENCH_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "curvbench" / "data"
