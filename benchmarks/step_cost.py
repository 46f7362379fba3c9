"""Per-step cost of every method as a ratio to SGD: same model, batch and device, measured in one run.

    python benchmarks/step_cost.py [--task mnist|conll|cifar10] [--data-dir DIR] [--recipe REF] [--batch-size B]
                                   [--methods sgd,kfac,...] [--rounds 7] [--block 100] [--short-block N]
                                   [--device cpu|cuda] [--threads 2] [--json FILE]

The task's own model, batch shapes and data: the real dataset from --data-dir when given, else generated data of
the same shapes (MNIST: the shipped mnist-mini digits; CIFAR-10: random 3x32x32 images; CoNLL-2003: sentences with
CoNLL's length distribution and vocabulary size). Methods are recipe entries: `--recipe recipes/peers.yaml` takes
that recipe's entries (built-in methods, plugins, any optimizer class by its import path), `--methods` picks
entries or names methods (defaults, or an import path such as torch.optim.Adam). Without either: every built-in
method with its defaults. With --recipe the task and batch size are the recipe's own (CoNLL's thesis recipe trains
at batch 2), unless --task or --batch-size say otherwise; s/epoch is ms/step times the steps of one epoch.

A step is the engine's step: forward, backward, the method's update. Amortised work (K-FAC's factor and
inverse updates, Shampoo's root recomputations) is counted honestly: each measurement is a block of `--block`
consecutive steps (a multiple of every default interval) divided by its length. `--short-block N` times the entries
whose every step does the same work (built-in methods with no interval or start step above 1 among their
hyperparameters: SGD, SAM, Lion, AdamW, Muon, Shampoo preconditioned every step from the first) in blocks of N
steps instead, the others still in blocks of `--block`: on ResNet-18 on a CPU, where a step takes seconds, a round
no longer pays 100 steps of every method. Methods are interleaved block by block so that drifts in machine speed
hit all of them; the ratio to SGD is taken per round (SGD's block of the same round) and reported as its median
and its [min, max] over rounds. Optimizer-state memory is the bytes of every tensor the optimizer holds besides the
parameters; on CUDA also the peak allocated during the steps.

`--json FILE` also writes each entry's milliseconds per step with the task, batch size, recipe, device, threads and
CPU: `curvbench report --step-costs FILE` prices the to-target runs of that task and batch size (and of that recipe
and the recipes verdict and scale-batch derive from it, when --recipe named one) in quiet seconds."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from curvbench import methods
from curvbench.recipe import loading as recipe
from curvbench.recipe.loading import MethodEntry
from curvbench.training import engine
from curvbench.training.runner import load_task
from curvbench.training.timing import configure_cpu, synchronize

TASKS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "conll": "conll2003", "cifar10": "cifar10"}
CONLL_TRAIN_SENTENCES, CONLL_WORDS, CONLL_TAGS = 14041, 23623, ("O", "I-PER", "I-ORG", "I-LOC", "I-MISC", "B-MISC",
                                                                  "B-ORG", "B-LOC")


def make_task(name: str, data_dir: str | None, device: torch.device, method_names: list[str]):
    """The task as the engine loads it: real data from `data_dir`, else generated data of the same shapes."""
    if name == "cifar10" and data_dir is None:
        return _random_cifar(device)
    dataset = task_dataset(name, data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if name == "conll" and data_dir is None:
            data_dir = _write_conll_like(Path(tmp))
        task = {"dataset": dataset, **({"data_dir": data_dir, "download": False} if data_dir else {})}
        r = recipe.parse({"task": task, "methods": method_names[:1] or ["sgd"]}, "step_cost")
        return load_task(r, device)


def _random_cifar(device: torch.device):
    from curvbench.tasks.base import Split
    from curvbench.tasks.cifar import CifarTask, effective

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2000, 3, 32, 32, generator=g), torch.randint(0, 10, (2000,), generator=g)
    options = {"augment": True, "channels_last": "auto", "bf16": "auto"}  # as a recipe that sets none
    channels_last, _ = effective(options, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    split = Split(x.to(device).contiguous(memory_format=fmt), y.to(device))
    return CifarTask("cifar10", "resnet18", "accuracy", split, split, 10, options=options, device=device)


def _write_conll_like(folder: Path) -> str:
    """CoNLL-2003-shaped column files: its number of training sentences, lengths drawn like its (mean 14.5,
    1 to 113 tokens), Zipf-distributed words over its vocabulary size, its tag set."""
    g = torch.Generator().manual_seed(0)
    root = folder / "conll2003"
    root.mkdir()
    for split, n in (("train", CONLL_TRAIN_SENTENCES), ("valid", 3250), ("test", 3453)):
        lengths = (torch.distributions.Gamma(2.0, 2.0 / 14.5).sample((n,)).clamp(1, 113)).long().tolist()
        ranks = torch.arange(1, CONLL_WORDS + 1, dtype=torch.float)
        words = torch.multinomial(1 / ranks, sum(lengths), replacement=True, generator=g).tolist()
        tags = torch.randint(0, len(CONLL_TAGS), (sum(lengths),), generator=g).tolist()
        lines, k = [], 0
        for length in lengths:
            for _ in range(length):
                lines.append(f"w{words[k]} NN I-NP {CONLL_TAGS[tags[k]]}")
                k += 1
            lines.append("")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return str(folder)


def state_bytes(opt, params: set[int]) -> int:
    """Bytes of the tensor storage reachable from the optimizer, each storage once (views share theirs), the
    parameters' and gradients' storage excluded (`params`: their storage pointers)."""
    seen: set[int] = set()
    storages: dict[int, int] = {}

    def walk(obj, depth):
        if depth > 6 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in params:
                storages[storage.data_ptr()] = storage.nbytes()
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
    return sum(storages.values())


def endless_batches(task, batch_size: int, gen: torch.Generator):
    """The task's training batches, epoch after epoch, each epoch's order drawn from `gen` when it starts."""
    while True:
        yield from task.train_batches(batch_size, gen)


class Stepper:
    def __init__(self, entry: MethodEntry, task, batch_size, device, block: int):
        self.name, self.task, self.device, self.block = entry.name, task, device, block
        torch.manual_seed(0)
        self.model = engine.build_model(task, methods.get(entry.method).model_needs).to(device)
        if hasattr(task, "prepare_model"):
            self.model = task.prepare_model(self.model)
        self.opt, self.l2 = engine.build_optimizer(task, self.model, entry, 100, 100, 0)
        self.params = [p for p in self.model.parameters()]
        self.gen = torch.Generator().manual_seed(0)
        self.batches = endless_batches(task, batch_size, self.gen)

    def next_batch(self):
        return next(self.batches)

    def run(self, steps: int) -> float:
        batches = [self.next_batch() for _ in range(steps)]  # data work off the clock, for every method alike
        synchronize(self.device)
        t0 = time.perf_counter()
        for b in batches:
            self.opt.step(engine.make_closure(self.model, self.task, self.opt, b, self.params, self.l2))
        synchronize(self.device)
        return (time.perf_counter() - t0) / steps


INTERVAL_SUFFIXES = ("_every", "_frequency", "_step")  # factor_every, precondition_frequency, start_..._step


def same_work_every_step(entry: MethodEntry) -> bool:
    """Whether every step of this entry does the same work, so that a short block measures its cost: a built-in
    method none of whose hyperparameters (defaults overridden by the entry's) is an interval or a start step above
    1. Plugins and optimizers named by import path may amortise work under any name: never."""
    spec = methods.get(entry.method)
    if spec.source != "built-in":
        return False
    hparams = {**spec.defaults(), **entry.hparams}
    return not any(k.endswith(INTERVAL_SUFFIXES) and isinstance(v, int) and v > 1 for k, v in hparams.items())


def entries(recipe_ref: str | None, wanted: str | None) -> list[MethodEntry]:
    """The methods to time, SGD (defaults) first unless the recipe has an entry named sgd."""
    names = [w.strip() for w in wanted.split(",")] if wanted else None
    if recipe_ref:
        overrides = recipe.Overrides(methods=names) if names else None
        chosen = recipe.load(recipe_ref, overrides).methods
    else:
        chosen = [MethodEntry(n, n, methods.get(n).defaults()) for n in (names or list(methods.registry()))]
    if not any(e.name == "sgd" for e in chosen):
        chosen.insert(0, MethodEntry("sgd", "sgd", methods.get("sgd").defaults()))
    return sorted(chosen, key=lambda e: e.name != "sgd")


def blocks(steppers) -> str:
    """The block lengths for the table's header: one number, or each entry's when they differ."""
    sizes = {s.block for s in steppers}
    return str(sizes.pop()) if len(sizes) == 1 else ", ".join(f"{s.name} {s.block}" for s in steppers)


def timing_flags(ap: argparse.ArgumentParser, rounds: int, block: int) -> None:
    """The flags every interleaved timing script takes: rounds, steps a block, device, threads."""
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--block", type=int, default=block)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)


def timing_setup(args) -> torch.device:
    """Threads and denormal flushing as the engine sets them; the device to time on."""
    if args.threads:
        torch.set_num_threads(args.threads)
    configure_cpu()
    return torch.device(args.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default=None, choices=tuple(TASKS), help="default: --recipe's task, else mnist")
    ap.add_argument("--data-dir", default=None, help="the real dataset's folder (else generated data)")
    ap.add_argument("--recipe", default=None, help="time this recipe's entries (e.g. recipes/peers.yaml)")
    ap.add_argument("--methods", default=None, help="entries of --recipe, or method names / import paths")
    ap.add_argument("--batch-size", type=int, default=None, help="default: --recipe's training.batch_size, else 100")
    ap.add_argument("--json", default=None, help="also write ms/step per entry here, for curvbench report --step-costs")
    ap.add_argument("--short-block", type=int, default=None,
                    help="steps a block for the entries whose every step does the same work (default: --block)")
    timing_flags(ap, rounds=7, block=100)
    args = ap.parse_args()
    for flag, value in (("--block", args.block), ("--short-block", args.short_block)):  # before any data loads
        if value is not None and value < 1:
            ap.error(f"{flag} must be at least 1, got {value}")
    device = timing_setup(args)
    chosen = entries(args.recipe, args.methods)
    own = None
    if args.recipe:  # the recipe's own training settings, unless the flags say otherwise
        own = recipe.load(args.recipe)
        by_dataset = {v: k for k, v in TASKS.items()}
        args.task = args.task or by_dataset.get(own.task.dataset, "mnist")
        args.batch_size = args.batch_size or own.training.batch_size
    args.task, args.batch_size = args.task or "mnist", args.batch_size or 100
    task = make_task(args.task, args.data_dir, device, [e.method for e in chosen])
    per_epoch = task.steps_per_epoch(args.batch_size)
    short = args.short_block or args.block
    steppers = [Stepper(e, task, args.batch_size, device, short if same_work_every_step(e) else args.block)
                for e in chosen]
    failed: dict[str, str] = {}  # a method whose training broke down (diverged) is timed no further

    def timed(s):
        try:
            return s.run(s.block)
        except Exception as e:  # noqa: BLE001 - reported in the table, the others go on
            failed[s.name] = " ".join(f"{e.__class__.__name__}: {e}".split())[:100]
            return None

    for s in steppers:
        timed(s)  # warm-up: past K-FAC's first inverse interval, Shampoo's start step, compilation
    times = {s.name: [] for s in steppers}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for s in steppers:
            if s.name in failed:
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = timed(s)
            if t is None:
                continue
            times[s.name].append(t)
            if device.type == "cuda":
                peaks[s.name] = max(peaks.get(s.name, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
    params = {t.untyped_storage().data_ptr() for s in steppers for p in s.params
              for t in (p, p.grad) if t is not None}
    data = "real data" if args.data_dir else "generated data"
    execution = getattr(task, "run_tags", {})  # a task's precision and memory format, as its runs are tagged
    print(f"task {args.task} ({data}{''.join(f', {v}' for v in execution.values())}) device {device} threads "
          f"{torch.get_num_threads()} batch {args.batch_size}: median of {args.rounds} interleaved blocks of "
          f"{blocks(steppers)} steps")
    peak_col = " peak allocated during steps (MiB) |" if peaks else ""
    print(f"{per_epoch} steps an epoch at batch {args.batch_size}")
    print("| method | ms/step | s/epoch | ratio to SGD | ratio [min, max] | optimizer state (KiB) |" + peak_col)
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if peaks else ""))
    ms_per_step = {}
    for s in steppers:
        if s.name in failed:
            print(f"| {s.name} | broke down after {len(times[s.name])} timed blocks: {failed[s.name]} | | | |")
            continue
        ratios = [t / b for t, b in zip(times[s.name], times["sgd"])]
        peak = f" {peaks[s.name]:.0f} |" if peaks else ""
        ms = ms_per_step[s.name] = statistics.median(times[s.name]) * 1e3
        print(f"| {s.name} | {ms:.2f} | {ms * per_epoch / 1e3:.1f} | {statistics.median(ratios):.2f} | "
              f"[{min(ratios):.2f}, {max(ratios):.2f}] | {state_bytes(s.opt, params) / 1024:.1f} |{peak}")
    if args.json:
        from curvbench.training.machine import cpu_model

        Path(args.json).write_text(json.dumps({
            "task": task_dataset(args.task, args.data_dir), "batch_size": args.batch_size,
            "recipe": own.name if own else None, "device": str(device),
            "threads": torch.get_num_threads(), "cpu": cpu_model(), "data": "real" if args.data_dir else "generated",
            "execution": execution,
            "rounds": args.rounds, "block": args.block,
            "blocks": {s.name: s.block for s in steppers}, "ms_per_step": ms_per_step, "broke_down": failed}, indent=1))
        print(f"step costs written to {args.json}")


def task_dataset(name: str, data_dir: str | None) -> str:
    """The dataset name runs are tagged with (their `task` tag): generated MNIST digits are mnist-mini's."""
    return TASKS[name] if data_dir is not None or name != "mnist" else "mnist-mini"


if __name__ == "__main__":
    main()
