"""Engine overhead: an epoch through curvbench's engine (tracking on) against a bare loop of the same steps.

    python benchmarks/engine_overhead.py [--epochs 3] [--threads 2]

Both train LeNet-5 with SGD on mnist-mini (8,000 images, batch 100), same seed, same device, in one process;
the ratio is engine wall time per epoch (training, evaluation excluded as the engine excludes it) over the bare
loop's. Goal: <= 1.05."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from curvbench.recipe import loading as recipe
from curvbench.tracking.client import Tracker
from curvbench.training.progress import QuietReporter
from curvbench.training.runner import load_task, run_recipe

RECIPE = {
    "task": "mnist-mini",
    "training": {"epochs": 3, "batch_size": 100, "seeds": [0], "device": "cpu", "eval_splits": ["test"]},
    "methods": {"sgd": {"lr": 0.1}},
}


def bare_epoch(task, model, opt, batch_size, gen) -> float:
    x, y = task.splits["train"].x, task.splits["train"].y
    t0 = time.perf_counter()
    perm = torch.randperm(len(y), generator=gen)
    for i in range(0, len(y), batch_size):
        idx = perm[i : i + batch_size]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # the engine does this too; the comparison is of the loop, not of the floats
    RECIPE["training"]["epochs"] = args.epochs
    r = recipe.parse(RECIPE, "engine_overhead")
    task = load_task(r, torch.device("cpu"))
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, foreach=True)
    gen = torch.Generator().manual_seed(0)
    bare_epoch(task, model, opt, 100, gen)  # warm-up
    with tempfile.TemporaryDirectory() as d:
        tracker = Tracker(f"sqlite:///{d}/mlflow.db")
        engine_times, bare_times = [], []
        for _ in range(2):  # interleave the two so drifts in machine speed hit both
            [outcome] = run_recipe(r, tracker, QuietReporter(open("/dev/null", "w")))
            engine_times += [e.metrics["epoch_seconds"] for e in outcome.epochs]
            bare_times += [bare_epoch(task, model, opt, 100, gen) for _ in range(args.epochs)]
    e, b = statistics.median(engine_times), statistics.median(bare_times)
    print(f"threads {torch.get_num_threads()}  epoch seconds: engine {e:.3f}  bare {b:.3f}  ratio {e / b:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
