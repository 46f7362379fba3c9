"""What a run's timing depends on besides its recipe: the CPU, the threads, how busy the machine was before and
after (the load average, and the CPU share of other processes over a short window), and on CUDA the GPU's clocks
and persistence mode. Identical SGD runs on a loaded 2-core machine took 124, 15 and 19 ms a step with 2 threads
against 11.8, 12.0 and 11.7 with one: a time is only comparable with the load it was measured under."""

from __future__ import annotations

import os
import time
from pathlib import Path

from curvbench import record

BUSY_MARGIN = 0.5  # runnable processes beyond the cores left free that make a machine "busy"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def load_average() -> float | None:
    """The 1-minute load average: processes running or waiting for a core, averaged."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def others_cpu_share(window: float = 0.1) -> float | None:
    """Cores' worth of CPU time spent by every other process over `window` seconds (Linux /proc/stat), e.g.
    1.0 when another process keeps one core busy."""
    def sample():
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle, _own_ticks()

    try:
        total0, idle0, own0 = sample()
        time.sleep(window)
        total1, idle1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    busy = (total1 - total0) - (idle1 - idle0) - (own1 - own0)
    return max(0.0, busy / max(1, total1 - total0) * (os.cpu_count() or 1))


def _own_ticks() -> int:
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def busy(others: float | None, threads: int, cpus: int | None = None) -> bool:
    """Whether other processes used more of the machine than the threads asked for leave free (`others`: cores'
    worth of their CPU time, from others_cpu_share; the load average counts this process's own recent work too,
    so it is recorded but not judged)."""
    cpus = cpus or os.cpu_count() or 1
    return others is not None and others > max(0, cpus - threads) + BUSY_MARGIN


def gpu_state(device) -> dict[str, str]:
    """On CUDA: the device name, its SM clock now and at most, and persistence mode (from nvidia-smi, when
    there)."""
    if getattr(device, "type", "cpu") != "cuda":
        return {}
    import subprocess

    import torch

    out = {"gpu": torch.cuda.get_device_name(device)}
    try:
        q = subprocess.run(["nvidia-smi", f"--id={device.index or 0}", "--query-gpu=clocks.sm,clocks.max.sm,"
                            "persistence_mode", "--format=csv,noheader"], capture_output=True, text=True, timeout=5)
        sm, sm_max, persistence = [x.strip() for x in q.stdout.strip().split(",")]
        out.update({"gpu_sm_clock": sm, "gpu_sm_clock_max": sm_max, "gpu_persistence": persistence})
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return out


def before_run(threads: int, device) -> tuple[dict[str, str], str | None]:
    """Tags for a run's start, and a one-line warning when the machine is busier than the threads leave room for."""
    share = others_cpu_share()
    cpus = os.cpu_count() or 1
    tags = {"cpu_model": cpu_model(), "cpus": str(cpus), "load_before": _fmt(load_average()),
            "others_cpu_before": _fmt(share), **gpu_state(device)}
    warning = None
    if busy(share, threads, cpus):
        warning = (f"the machine is busy: other processes use {_fmt(share)} of its {cpus} cores while this run asks "
                   f"for {threads} thread(s); its times are marked busy (for stable timings, run alone)")
    return tags, warning


def after_run(threads: int, start_tags: dict[str, str]) -> dict[str, str]:
    """Tags for a run's end: the load then, what other processes used, and whether the timing was quiet."""
    share = others_cpu_share()
    cpus = int(start_tags.get("cpus", os.cpu_count() or 1))
    was_busy = busy(_num(start_tags.get("others_cpu_before")), threads, cpus) or busy(share, threads, cpus)
    return {"load_after": _fmt(load_average()), "others_cpu_after": _fmt(share),
            record.TIMING: "busy" if was_busy else "quiet"}


_warned = False


def warn_once(message: str) -> None:
    """One `warning:` line on stderr per command, however many runs find the machine busy."""
    global _warned
    if not _warned:
        import sys

        sys.stderr.write(f"warning: {message}\n")
        _warned = True


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.2f}"


def _num(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
