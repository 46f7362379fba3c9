"""Throughput of a sweep: trials per minute with 1 and 2 workers, against SQLite and against PostgreSQL with an
MLflow tracking server, and the tracking cost per logged epoch (local store against the server).

    python benchmarks/sweep_scaling.py [--trials 8] [--epochs 1]

The services come from the environment, as CI sets them (`source .ci/services.sh start`):
CURVBENCH_TEST_POSTGRES (the study storage) and CURVBENCH_TEST_TRACKING (the server); without them only the
SQLite rows are measured. Each configuration runs `curvbench tune` on a fresh study: an 8-point grid of SGD on
mnist-mini (each trial its own short training run), wall time from start to exit. The tracking cost is the
mean time of logging one epoch's metrics (`TrackedRun.log_metrics`, what the engine calls once per epoch),
measured against each store in one interleaved loop."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

GRID = "[0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.003, 0.002, 0.001, 0.0005]"


def tune(recipe: Path, workers: int, storage: str, tracking: str, study: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "curvbench.cli", "tune", str(recipe), "--workers", str(workers),
                           "--storage", storage, "--study", study, "--tracking-uri", tracking, "--quiet"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"tune failed ({workers} workers, {storage}): {proc.stderr.strip()[-400:]}")
    return time.perf_counter() - t0


def logging_cost(uris: dict[str, str], epochs: int = 200) -> dict[str, float]:
    """ms per logged epoch (a batch of the engine's per-epoch metrics), interleaved over the stores."""
    from curvbench.tracking import Tracker

    runs = {name: Tracker(uri).start("sweep-scaling", f"logging-{name}", {}, {}) for name, uri in uris.items()}
    times: dict[str, list[float]] = {name: [] for name in uris}
    metrics = {"train_loss": 0.5, "lr": 0.1, "steps": 600, "train_seconds": 3.0, "epoch_seconds": 3.0,
               "test_loss": 0.4, "test_accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.9}
    for epoch in range(epochs):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run.log_metrics(metrics, step=epoch)
            times[name].append(time.perf_counter() - t0)
    for run in runs.values():
        run.end("FINISHED")
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    postgres, server = os.environ.get("CURVBENCH_TEST_POSTGRES"), os.environ.get("CURVBENCH_TEST_TRACKING")
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "sweep.yaml"
        recipe.write_text(f"task: mnist-mini\ntraining: {{epochs: {args.epochs}, validation: 0.1}}\n"
                          f"methods: {{sgd: {{lr: 0.1}}}}\nsearch: {{sgd: {{lr: {GRID}}}}}\n")
        trials = len(GRID.split(","))
        configs = [("SQLite study, local tracking store", f"sqlite:///{tmp}/optuna.db", f"sqlite:///{tmp}/mlflow.db")]
        if postgres and server:
            configs.append(("PostgreSQL study, tracking server", postgres, server))
        print(f"{trials} trials of {args.epochs} epoch(s) of SGD on mnist-mini, {os.cpu_count()} CPU cores")
        print("| storage and tracking | workers | wall s | trials / min | speed-up |")
        print("|---|---:|---:|---:|---:|")
        for label, storage, tracking in configs:
            one = None
            for workers in (1, 2):
                wall = tune(recipe, workers, storage, tracking, f"scaling-{uuid.uuid4().hex[:8]}")
                one = one or wall
                print(f"| {label} | {workers} | {wall:.1f} | {trials / wall * 60:.1f} | {one / wall:.2f} |")
        uris = {"local SQLite store": f"sqlite:///{tmp}/mlflow.db"}
        if server:
            uris["tracking server"] = server
        cost = logging_cost(uris)
        print()
        print("| tracking store | ms per logged epoch (median of 200) |")
        print("|---|---:|")
        for name, ms in cost.items():
            print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
