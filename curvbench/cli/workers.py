"""Several worker processes on one study: `curvbench tune RECIPE --workers N [--devices cuda:0,cuda:1]`.

Each worker is the same `curvbench tune` command with one device and its share of the CPU cores; they share the
study through its storage (Optuna's documented way to distribute a study: every worker opens the same RDB
storage), so every grid point runs once across all of them, whichever machine they are on. This process only
starts them, shows one combined progress line per method (read from the study), forwards Ctrl-C and SIGTERM to
every worker (each ends its running trial as it does alone) and exits with the combined outcome: 0 when every
worker did, 130 when interrupted, else the first failing worker's code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from curvbench.errors import CurvbenchError

# the flags this process consumes: the workers get the rest of the command line as it was typed
OWN_FLAGS = {"--workers": 1, "--devices": 1}


@dataclass(frozen=True)
class Worker:
    argv: list[str]
    env: dict[str, str]
    device: str
    threads: int


def check(workers: int, devices: list[str] | None) -> None:
    if workers < 1:
        raise CurvbenchError(f"--workers {workers}: expected 1 or more")
    if devices is not None:
        if not devices or any(not d for d in devices):
            raise CurvbenchError("--devices: expected a comma-separated list such as cuda:0,cuda:1")
        if len(devices) != workers:
            raise CurvbenchError(f"--devices names {len(devices)} device(s) for --workers {workers}; give one per "
                                 f"worker")
        from curvbench.training.timing import resolve_device

        for d in devices:  # every device exists, before any worker starts
            if d != "cpu" and not re.fullmatch(r"cuda(:\d{1,4})?", d):
                raise CurvbenchError(f"--devices: {d!r} is not a device; expected cpu, cuda or cuda:N")
            resolve_device(d)


def strip_own_flags(argv: list[str]) -> list[str]:
    """The command line without --workers/--devices (and their values), in either --flag value or --flag=value."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in OWN_FLAGS:
            skip = 0 if "=" in arg else OWN_FLAGS[name]
            continue
        out.append(arg)
    return out


def plan(argv: list[str], workers: int, devices: list[str] | None, cores: int | None = None) -> list[Worker]:
    """One command per worker: the same arguments, its device, its share of the cores (CPU workers), quiet."""
    cores = cores or os.cpu_count() or 1
    base = strip_own_flags(argv)
    out = []
    for i in range(workers):
        device = devices[i] if devices else None
        threads = max(1, cores // workers)
        args = [sys.executable, "-m", "curvbench", *base, "--quiet", "--threads", str(threads)]
        if device:
            args += ["--device", device]
        env = dict(os.environ, CURVBENCH_WORKER=str(i + 1))
        out.append(Worker(args, env, device or "as the recipe says", threads))
    return out


def run(workers: list[Worker], progress, poll_seconds: float = 2.0, log_dir=None) -> int:
    """Start the workers, call `progress()` every poll until all have exited, and return the combined exit code.
    Ctrl-C or SIGTERM here is passed to every worker, which ends its running trial; the workers' own output goes
    to `log_dir`/worker-N.log when given (else to this terminal's stderr)."""
    procs: list[subprocess.Popen] = []
    logs = []
    stopping = {"signal": None}

    def forward(signum, frame):
        stopping["signal"] = signum
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i, w in enumerate(workers):
            out = None
            if log_dir is not None:
                out = open(os.path.join(log_dir, f"worker-{i + 1}.log"), "w")
                logs.append(out)
            # its own process group: a Ctrl-C in the terminal reaches this process only, which forwards it once
            procs.append(subprocess.Popen(w.argv, env=w.env, stdout=out or subprocess.DEVNULL,
                                          stderr=out or None, start_new_session=True))
            if i == 0:
                time.sleep(0.5)  # the first worker creates the storage's tables; the others open them
        while any(p.poll() is None for p in procs):
            progress()
            time.sleep(poll_seconds)
        progress()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for p in procs:
            if p.poll() is None:  # only if this process itself failed: do not leave workers behind
                p.terminate()
                p.wait()
        for f in logs:
            f.close()
    if stopping["signal"] is not None:
        return 130
    codes = [p.returncode for p in procs]
    return next((c for c in codes if c != 0), 0)
