"""Devices, threads and a stopwatch that only counts what it is told to (synchronising CUDA first)."""

from __future__ import annotations

import time

import torch

from curvbench.errors import CurvbenchError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CurvbenchError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise CurvbenchError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                 f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def configure_cpu() -> None:
    """Flush denormal floats to zero: tiny weights and gradients otherwise slow CPU steps by up to a third."""
    torch.set_flush_denormal(True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates seconds between start() and stop(); the clock is read after the device has finished."""

    def __init__(self, device: torch.device):
        self.device = device
        self.total = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        synchronize(self.device)
        if self._t0 is not None:
            self.total += time.perf_counter() - self._t0
            self._t0 = None
        return self.total

    @property
    def running(self) -> bool:
        return self._t0 is not None
