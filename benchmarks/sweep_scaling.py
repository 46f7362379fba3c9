"""Throughput of a sweep: trials per minute with 1 and 2 workers, against SQLite and against PostgreSQL with an
MLflow tracking server, this machine's own ceiling for several workers, and how long training waits for tracking
(local store against the server).

    python benchmarks/sweep_scaling.py [--epochs 5]

The services come from the environment, as CI sets them (`source .ci/services.sh start`):
CURVBENCH_TEST_POSTGRES (the study storage) and CURVBENCH_TEST_TRACKING (the server); without them only the
SQLite rows are measured. Each configuration runs `curvbench tune` on a fresh study: a 12-point grid of SGD on
mnist-mini (each trial its own training run), wall time from start to exit (process start and data loading
included, once per worker). The tracking cost is how long the training thread waits for a trial's writes (start
with its params, the recipe text, each epoch's metrics, outcome, end) against each store, trial after trial in
one interleaved loop, with the measured epoch time between epochs; its share of a trial is that wait over the
mean wall time of a one-worker SQLite trial."""

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
    proc = subprocess.run([sys.executable, "-m", "curvbench", "tune", str(recipe), "--workers", str(workers),
                           "--threads", str(threads), "--storage", storage, "--study", study, "--tracking-uri",
                           tracking, "--quiet"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"tune failed ({workers} workers, {storage}): {proc.stderr.strip()[-400:]}")
    wall = time.perf_counter() - t0
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    per_trial = statistics.fmean((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return wall, span, per_trial


LOOP = """
import sys, time, torch
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                      nn.Linear(84, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,))
for i in range(int(sys.argv[1]) + 20):
    if i == 20:
        t0 = time.perf_counter()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
print(time.perf_counter() - t0)
"""


def machine_ceiling(processes: int, rounds: int = 8, steps: int = 200) -> float:
    """How much slower one process's fixed work (LeNet-5 SGD steps, one thread, plain PyTorch, no curvbench) runs
    when `processes` run it at once than alone: the most N workers can give is N over this."""
    alone, together = [], []
    for _ in range(rounds):  # alternate, so drifts of the machine fall on both
        out = subprocess.run([sys.executable, "-c", LOOP, str(steps)], capture_output=True, text=True, check=True)
        alone.append(float(out.stdout))
        procs = [subprocess.Popen([sys.executable, "-c", LOOP, str(steps)], stdout=subprocess.PIPE, text=True)
                 for _ in range(processes)]
        together.extend(float(p.communicate()[0]) for p in procs)
    return statistics.fmean(together) / statistics.fmean(alone)


def tracking_cost(uris: dict[str, str], epochs: int, epoch_seconds: float, runs: int = 10) -> dict[str, tuple]:
    """What the training thread waits for tracking, per store: (ms per epoch's metrics write, ms per trial in all).
    A trial's writes are those a tune trial makes: start with its params, the recipe text, one metrics write per
    epoch, outcome tags, summary metrics, end. Between two epochs the caller sleeps for one epoch of the measured
    trial, as training would (a write queued to a server is sent meanwhile); the stores take turns, trial by trial."""
    from curvbench.tracking.client import Tracker

    trackers = {name: Tracker(uri) for name, uri in uris.items()}
    epoch_ms: dict[str, list[float]] = {name: [] for name in uris}
    trial_ms: dict[str, list[float]] = {name: [] for name in uris}
    metrics = {"train_loss": 0.5, "lr": 0.1, "steps": 600, "train_seconds": 3.0, "epoch_seconds": 3.0,
               "test_loss": 0.4, "test_accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.9}
    params = {f"training.p{i}": i for i in range(40)}  # about what a run's resolved recipe holds
    for i in range(runs):
        for name, tracker in trackers.items():
            waited = 0.0
            t0 = time.perf_counter()
            run = tracker.start("sweep-scaling", f"trial-{i}", params, {"kind": "trial"})
            run.log_text("recipe: text\n" * 40, "recipe.yaml")
            waited += time.perf_counter() - t0
            for epoch in range(1, epochs + 1):
                time.sleep(epoch_seconds)
                t0 = time.perf_counter()
                run.log_metrics(metrics, step=epoch)
                epoch_ms[name].append((time.perf_counter() - t0) * 1e3)
                waited += time.perf_counter() - t0
            t0 = time.perf_counter()
            run.set_tags({"outcome": "finished"})
            run.log_metrics({"best_val_accuracy": 0.9, "final_val_accuracy": 0.9}, step=0)
            run.end("FINISHED")
            waited += time.perf_counter() - t0
            trial_ms[name].append(waited * 1e3)
    return {name: (statistics.median(epoch_ms[name]), statistics.median(trial_ms[name])) for name in uris}


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
        slowdown = machine_ceiling(cores)
        print(f"\nthis machine: {cores} processes of the same single-threaded training run {slowdown:.2f}x slower each "
              f"than one alone (plain PyTorch, no curvbench), so {cores} workers can give at most "
              f"{cores / slowdown:.2f}x one worker's trials per minute")
        uris = {"local SQLite store": configs[0][2]}
        if server:
            uris["tracking server"] = server
        trial = trial_seconds[configs[0][2]]  # one worker's trial against SQLite: the training it waits beside
        cost = tracking_cost(uris, args.epochs, trial / args.epochs)
        print()
        print(f"| tracking store | ms waited per epoch's metrics | ms waited per {args.epochs}-epoch trial, all its "
              f"writes | share of a {trial:.2f}-s trial |")
        print("|---|---:|---:|---:|")
        for name, (per_epoch, per_trial) in cost.items():
            print(f"| {name} | {per_epoch:.2f} | {per_trial:.1f} | {per_trial / 1e3 / trial:.1%} |")


if __name__ == "__main__":
    main()
