"""ResNet-18 step time under each execution option, for SGD and K-FAC: float32, channels_last, bf16 autocast and
torch.compile of the model, as ratios to the float32 SGD step, measured in one interleaved run.

    python benchmarks/cifar_speed.py [--data-dir DIR] [--methods sgd,kfac] [--variants float32,channels_last,...]
                                     [--rounds 3] [--block 10] [--device cpu|cuda] [--threads 2]

Variants (combined with +): channels_last (model and images in NHWC), bf16 (autocast of the model's forward;
loss and K-FAC's statistics stay float32), compile (torch.compile of the model, default mode). bf16 on a CPU
without bf16 instructions is listed as unavailable, not timed: there it runs emulated and measures nothing a
user would choose. Compilation is timed apart (a compiled variant's first step and warm-up block, minus as
many steps at its measured time), as AlgoPerf does; a variant whose compilation or step fails is reported with its
error. A variant must compute what float32 computes, to precision: each variant's first step (the same weights,
batch and seeds for every variant; K-FAC's first step gathers factors and inverts them) is compared with its
method's float32 variant's, and an update that differs by more than its precision's SAME_WITHIN is flagged, never
timed as a speed-up (compiled K-FAC once skipped its curvature work). With both methods, K-FAC's float32 update is
compared with SGD's too: how far a variant that skipped the curvature work would be. One step, not a block: at
small batches training is chaotic enough that rounding alone grows past any tolerance in a few steps. Each
measurement is a block of `--block` consecutive steps (K-FAC's factor and inverse work counted at their default
intervals when the block is a multiple of them); variants are interleaved block by block and each ratio is taken
against the float32 SGD block of the same round: median [min, max] over rounds."""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from step_cost import endless_batches, timing_flags, timing_setup  # noqa: E402 - the benchmarks folder's sibling script

from curvbench import methods
from curvbench.recipe.loading import MethodEntry
from curvbench.tasks.base import Split
from curvbench.tasks.cifar import CifarTask, cpu_has_bf16
from curvbench.training import engine
from curvbench.training.timing import synchronize

OPTIONS = ("channels_last", "bf16", "compile")
# Relative difference of the first step's updates beyond which a variant computes something else. ResNet-18's
# first update at init is sensitive to rounding (batch norm's backward subtracts nearly equal terms): on one real
# batch, float32's gradient differs from float64's by 3.4e-3 and bf16 autocast's by 0.27, rounding alone.
SAME_WITHIN = {"float32": 0.05, "bf16": 0.5}


def precision(name: str) -> str:
    return "bf16" if "bf16" in name.split("+") else "float32"


def drift(v: "Variant", ref: "Variant") -> float:
    """How far v's steps moved the parameters from where ref's moved them (both start from the same weights and
    see the same batches): |dv - dref| / |dref| over all parameters together, d = now - initial."""
    num = den = 0.0
    for p, p0, r, r0 in zip(v.params, v.initial, ref.params, ref.initial):
        d, dr = p.detach().float() - p0, r.detach().float() - r0
        num += float((d - dr).pow(2).sum())
        den += float(dr.pow(2).sum())
    return (num / max(den, 1e-30)) ** 0.5


def base_splits(data_dir: str | None, device: torch.device) -> Split:
    if data_dir:
        from curvbench.recipe import loading as recipe
        from curvbench.training.runner import load_task

        r = recipe.parse({"task": {"dataset": "cifar10", "data_dir": data_dir, "download": False,
                                   "options": {"channels_last": False, "bf16": False}},
                          "methods": ["sgd"]}, "cifar_speed")
        return load_task(r, device).splits["train"]
    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(2000, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (2000,), generator=g))


class Variant:
    def __init__(self, name: str, method: str, train: Split, batch_size: int, device: torch.device):
        self.name, self.method, self.device = name, method, device
        opts = set(name.split("+")) - {"float32"}
        unknown = opts - set(OPTIONS)
        if unknown:
            raise SystemExit(f"--variants: unknown option(s) {', '.join(sorted(unknown))} (known: {', '.join(OPTIONS)})")
        fmt = torch.channels_last if "channels_last" in opts else torch.contiguous_format
        split = Split(train.x.contiguous(memory_format=fmt), train.y)
        options = {"augment": True, "channels_last": "channels_last" in opts, "bf16": "bf16" in opts}
        self.task = CifarTask("cifar10", "resnet18", "accuracy", split, split, 10, options=options, device=device)
        torch.manual_seed(0)
        self.model = self.task.prepare_model(self.task.build_model().to(device))
        entry = MethodEntry(method, method, methods.get(method).defaults())
        self.opt, self.l2 = engine.build_optimizer(self.task, self.model, entry, 500, 20, 0)
        self.params = list(self.model.parameters())
        self.initial = [p.detach().float().clone() for p in self.params]  # the same weights in every variant
        self.forward_model = torch.compile(self.model) if "compile" in opts else self.model
        self.gen = torch.Generator().manual_seed(0)
        self.batches = endless_batches(self.task, batch_size, self.gen)
        self.error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.name}"

    def next_batch(self):
        return next(self.batches)

    def run(self, steps: int) -> float | None:
        if self.error:
            return None
        batches = [self.next_batch() for _ in range(steps)]
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            for b in batches:
                self.opt.step(engine.make_closure(self.forward_model, self.task, self.opt, b, self.params, self.l2))
        except Exception as e:  # noqa: BLE001 - reported in the table; the other variants go on
            self.error = " ".join(f"{e.__class__.__name__}: {e}".split())[:120]
            return None
        synchronize(self.device)
        return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="real CIFAR-10 (else random images of its shape)")
    ap.add_argument("--methods", default="sgd,kfac")
    ap.add_argument("--variants", default="float32,channels_last,bf16,bf16+channels_last,compile,"
                                          "compile+channels_last")
    ap.add_argument("--batch-size", type=int, default=100)
    timing_flags(ap, rounds=3, block=10)
    args = ap.parse_args()
    device = timing_setup(args)
    names = [v.strip() for v in args.variants.split(",")]
    if "float32" not in names:
        names.insert(0, "float32")
    skipped = {}
    if device.type == "cpu" and not cpu_has_bf16():
        skipped = {n: "unavailable: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16)"
                   for n in names if "bf16" in n.split("+")}
    train = base_splits(args.data_dir, device)
    variants = [Variant(n, m, train, args.batch_size, device)
                for m in args.methods.split(",") for n in names if n not in skipped]
    first = {}
    for v in variants:  # one step from the same weights on the same batch: what each variant computes
        t0 = time.perf_counter()
        v.run(1)
        first[v.label] = time.perf_counter() - t0
    float32_of = {v.method: v for v in variants if v.name == "float32"}
    differs = {v.label: drift(v, float32_of[v.method])
               for v in variants if v.name != "float32" and not v.error and not float32_of[v.method].error}
    skipped_curvature = (drift(float32_of["sgd"], float32_of["kfac"]) if {"sgd", "kfac"} <= float32_of.keys()
                         and not any(float32_of[m].error for m in ("sgd", "kfac")) else None)
    for v in variants:  # warm-up block; a compiled variant's first step and block hold its compilation
        t0 = time.perf_counter()
        v.run(args.block)
        first[v.label] += time.perf_counter() - t0
    times = {v.label: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            t = v.run(args.block)
            if t is not None:
                times[v.label].append(t)
    reference = times["sgd float32"]
    print(f"ResNet-18, batch {args.batch_size}, device {device}, threads {torch.get_num_threads()}, "
          f"{'real CIFAR-10' if args.data_dir else 'random images'}: median of {args.rounds} interleaved blocks "
          f"of {args.block} steps")
    print("| method | variant | ms/step | ratio to SGD float32 [min, max] | ratio to its method's float32 | "
          "compile (s) | first step against float32 |")
    print("|---|---|---:|---:|---:|---:|---|")
    for v in variants:
        if v.error or not times[v.label]:
            print(f"| {v.method} | {v.name} | failed: {v.error} | | | | |")
            continue
        d = differs.get(v.label)
        same = "" if d is None else (f"same to {d:.1e}" if d <= SAME_WITHIN[precision(v.name)] else
                                     f"**differ by {d:.2f}: not the same computation, its time means nothing**")
        ratios = [t / r for t, r in zip(times[v.label], reference)]
        own = times.get(f"{v.method} float32") or []
        own_ratio = statistics.median(t / r for t, r in zip(times[v.label], own)) if own else float("nan")
        ms = statistics.median(times[v.label]) * 1e3
        compile_s = (first[v.label] - statistics.median(times[v.label]) * (args.block + 1) if "compile" in v.name
                     else None)
        print(f"| {v.method} | {v.name} | {ms:.0f} | {statistics.median(ratios):.2f} [{min(ratios):.2f}, "
              f"{max(ratios):.2f}] | {own_ratio:.2f} | {'' if compile_s is None else f'{compile_s:.0f}'} | {same} |")
    for n, why in skipped.items():
        print(f"| all | {n} | {why} | | | | |")
    if skipped_curvature is not None:
        print(f"K-FAC's float32 first update against SGD's (a variant that skipped the curvature work): differ by "
              f"{skipped_curvature:.2f}")


if __name__ == "__main__":
    main()
