"""Per-step cost of every method as a ratio to SGD: same model, batch and device, measured in one run.

    python benchmarks/step_cost.py [--model lenet5|resnet18] [--methods sgd,sam,...] [--rounds 7] [--block 100]
                                   [--device cpu|cuda] [--threads 2]

A step is the engine's step: forward, backward, the method's update. Amortised work (K-FAC's factor and
inverse updates, Shampoo's root recomputations) is counted honestly: each measurement is a block of `--block`
consecutive steps (a multiple of every default interval) divided by its length, and the reported time is the
median over `--rounds` blocks. Methods are interleaved block by block so that drifts in machine speed hit all
of them. Optimizer-state memory is the bytes of every tensor the optimizer holds besides the parameters."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from curvbench import engine, methods, recipe
from curvbench.recipe import MethodEntry
from curvbench.runner import load_task
from curvbench.timing import configure_cpu, synchronize

TASKS = ("lenet5", "resnet18")


def make_task(model: str, device: torch.device):
    """LeNet-5 on mnist-mini; ResNet-18 on CIFAR-shaped random images (the step cost does not depend on them)."""
    if model == "lenet5":
        return load_task(recipe.parse({"task": "mnist-mini", "methods": ["sgd"]}, "step_cost"), device)
    from curvbench.tasks.base import Split
    from curvbench.tasks.cifar import CifarTask

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2000, 3, 32, 32, generator=g), torch.randint(0, 10, (2000,), generator=g)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    split = Split(x.to(device).contiguous(memory_format=fmt), y.to(device))
    options = {"augment": True, "channels_last": True, "bf16": True}
    return CifarTask("cifar10", "resnet18", "accuracy", split, split, 10, options=options, device=device)


def state_bytes(opt, params: set[int]) -> int:
    """Bytes of the tensors reachable from the optimizer, parameters and their gradients excluded."""
    seen: set[int] = set()
    total = 0

    def walk(obj, depth):
        nonlocal total
        if depth > 6 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if id(obj) not in params and obj.grad_fn is None:
                total += obj.numel() * obj.element_size()
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (torch.nn.Module, type)):
            for k, v in vars(obj).items():
                if k not in ("model", "module", "param_groups", "fisher_loss", "task"):
                    walk(v, depth + 1)

    walk(opt, 0)
    return total


class Stepper:
    def __init__(self, name, task, batch_size, device):
        self.name, self.task, self.device = name, task, device
        torch.manual_seed(0)
        self.model = task.build_model(method=name).to(device)
        if hasattr(task, "prepare_model"):
            self.model = task.prepare_model(self.model)
        entry = MethodEntry(name, name, methods.get(name).defaults())
        self.opt, self.l2 = engine.build_optimizer(task, self.model, entry, 100, 100, 0)
        self.params = [p for p in self.model.parameters()]
        self.gen = torch.Generator().manual_seed(0)
        self.batch_size = batch_size
        self.batches = iter(())

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = self.task.train_batches(self.batch_size, self.gen)
            return next(self.batches)

    def run(self, steps: int) -> float:
        batches = [self.next_batch() for _ in range(steps)]  # data work off the clock, for every method alike
        synchronize(self.device)
        t0 = time.perf_counter()
        for b in batches:
            self.opt.step(engine.make_closure(self.model, self.task, self.opt, b, self.params, self.l2))
        synchronize(self.device)
        return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(methods.registry()))
    ap.add_argument("--model", default="lenet5", choices=TASKS)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configure_cpu()  # as the engine does
    device = torch.device(args.device)
    names = [m.strip() for m in args.methods.split(",")]
    if "sgd" not in names:
        names.insert(0, "sgd")
    task = make_task(args.model, device)
    steppers = [Stepper(n, task, args.batch_size, device) for n in names]
    for s in steppers:
        s.run(args.block)  # warm-up: past K-FAC's first inverse interval, Shampoo's start step, allocator growth
    times = {s.name: [] for s in steppers}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for s in steppers:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[s.name].append(s.run(args.block))
            if device.type == "cuda":
                peaks[s.name] = max(peaks.get(s.name, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
    params = {id(p) for s in steppers for p in s.params}
    sgd = statistics.median(times["sgd"])
    print(f"device {device} threads {torch.get_num_threads()} model {args.model} batch {args.batch_size}: "
          f"median of {args.rounds} blocks of {args.block} steps")
    peak_col = " peak allocated during steps (MiB) |" if peaks else ""
    print("| method | ms/step | ratio to SGD | optimizer state (KiB) |" + peak_col)
    print("|---|---:|---:|---:|" + ("---:|" if peaks else ""))
    for s in steppers:
        t = statistics.median(times[s.name])
        peak = f" {peaks[s.name]:.0f} |" if peaks else ""
        print(f"| {s.name} | {t * 1e3:.2f} | {t / sgd:.2f} | {state_bytes(s.opt, params) / 1024:.1f} |{peak}")


if __name__ == "__main__":
    main()
