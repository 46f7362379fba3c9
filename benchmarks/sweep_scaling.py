"""Throughput of a sweep: trials per minute with 1 and 2 workers, against SQLite and against PostgreSQL with an
MLflow tracking server, and the tracking cost per logged epoch (local store against the server).

    python benchmarks/sweep_scaling.py [--epochs 5]

The services come from the environment, as CI sets them (`source .ci/services.sh start`):
CURVBENCH_TEST_POSTGRES (the study storage) and CURVBENCH_TEST_TRACKING (the server); without them only the
SQLite rows are measured. Each configuration runs `curvbench tune` on a fresh study: a 12-point grid of SGD on
mnist-mini (each trial its own training run), wall time from start to exit (process start and data loading
included, once per worker). The tracking cost is what a run writes, timed against each store in one interleaved
loop: one epoch's metrics (`TrackedRun.log_metrics`, once per epoch) and a run's fixed writes (start with its
params, the recipe text, tags, end); its share of a trial is that cost over the trial's mean wall time."""

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


def tune(recipe: Path, workers: int, threads: int, storage: str, tracking: str, study: str):
    """Wall seconds of the whole command, seconds from the first trial's start to the last one's end (the sweep
    once the workers are up), and the mean wall seconds of one trial."""
    import optuna

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "curvbench.cli", "tune", str(recipe), "--workers", str(workers),
                           "--threads", str(threads), "--storage", storage, "--study", study, "--tracking-uri",
                           tracking, "--quiet"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"tune failed ({workers} workers, {storage}): {proc.stderr.strip()[-400:]}")
    wall = time.perf_counter() - t0
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    per_trial = statistics.fmean((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return wall, span, per_trial


def tracking_cost(uris: dict[str, str], rounds: int = 200) -> dict[str, tuple[float, float]]:
    """(ms per logged epoch, ms of a run's fixed writes) for each store, interleaved over the stores."""
    from curvbench.tracking import Tracker

    trackers = {name: Tracker(uri) for name, uri in uris.items()}
    runs = {name: t.start("sweep-scaling", f"logging-{name}", {}, {}) for name, t in trackers.items()}
    epoch_ms: dict[str, list[float]] = {name: [] for name in uris}
    run_ms: dict[str, list[float]] = {name: [] for name in uris}
    metrics = {"train_loss": 0.5, "lr": 0.1, "steps": 600, "train_seconds": 3.0, "epoch_seconds": 3.0,
               "test_loss": 0.4, "test_accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.9}
    params = {f"training.p{i}": i for i in range(40)}  # about what a run's resolved recipe holds
    for i in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run.log_metrics(metrics, step=i)
            epoch_ms[name].append((time.perf_counter() - t0) * 1e3)
        if i % 10 == 0:
            for name, tracker in trackers.items():
                t0 = time.perf_counter()
                r = tracker.start("sweep-scaling", f"fixed-{i}", params, {"kind": "trial"})
                r.log_text("recipe: text\n" * 40, "recipe.yaml")
                r.set_tags({"outcome": "finished"})
                r.end("FINISHED")
                run_ms[name].append((time.perf_counter() - t0) * 1e3)
    for run in runs.values():
        run.end("FINISHED")
    return {name: (statistics.median(epoch_ms[name]), statistics.median(run_ms[name])) for name in uris}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
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
        print("| storage and tracking | workers x threads | wall s | trials / min | speed-up | trials / min once up "
              "| speed-up once up | mean trial s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        trial_seconds = {}
        cores = os.cpu_count() or 1
        for label, storage, tracking in configs:
            one = one_span = None
            # one worker on one core (the speed-up's base: each worker has its own core), on every core, then
            # one worker per core
            for workers, threads in ((1, 1), (1, cores), (cores, 1)):
                wall, span, per_trial = tune(recipe, workers, threads, storage, tracking,
                                             f"scaling-{uuid.uuid4().hex[:8]}")
                one, one_span = one or wall, one_span or span
                trial_seconds.setdefault(tracking, per_trial)
                print(f"| {label} | {workers} x {threads} | {wall:.1f} | {trials / wall * 60:.1f} | {one / wall:.2f} "
                      f"| {trials / span * 60:.1f} | {one_span / span:.2f} | {per_trial:.2f} |")
        uris = {"local SQLite store": configs[0][2]}
        if server:
            uris["tracking server"] = server
        cost = tracking_cost(uris)
        print()
        print(f"| tracking store | ms per logged epoch | ms per run (start, params, recipe, tags, end) | "
              f"share of a {args.epochs}-epoch trial |")
        print("|---|---:|---:|---:|")
        for name, (per_epoch, per_run) in cost.items():
            trial = trial_seconds[uris[name]]
            share = (args.epochs * per_epoch + per_run) / 1e3 / trial
            print(f"| {name} | {per_epoch:.2f} | {per_run:.1f} | {share:.1%} of {trial:.2f} s |")


if __name__ == "__main__":
    main()
