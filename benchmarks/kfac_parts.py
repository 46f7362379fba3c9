"""Where K-FAC's time goes on a task, part by part, and what an epoch costs against SGD's.

    python benchmarks/kfac_parts.py [--task cifar10|mnist|conll] [--data-dir DIR] [--batch-size 100]
                                    [--steps 3] [--threads 2] [--set conv_factors=reduce ...]

Steps of each kind are timed in turn, interleaved over `--steps` rounds (median): an SGD step; a K-FAC step that
gathers no factors (forward, backward, preconditioning, the update); a factor step (the same plus the layer
inputs kept, one extra backward of the sampled loss and the factor products), for `conv_factors` expand and
reduce; and one round of inverses (every layer's damped factors, Cholesky in float64). An epoch of K-FAC then
costs steps x plain + steps/factor_every x (factor - plain) + inverse rounds x inverse, where the inverse rounds
are steps/inverse_every, plus inverse_every/factor_every - 1 more in the first epoch (K-FAC's warm-up inverts
after every factor update during its first interval). Block timings (benchmarks/step_cost.py) show the same
ratios without the parts; this script says which part to work on."""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml
from step_cost import endless_batches, make_task, timing_setup  # noqa: E402 - the benchmarks folder's sibling script

from curvbench import methods
from curvbench.recipe.loading import MethodEntry
from curvbench.training import engine

TRAIN_EXAMPLES = {"cifar10": 50_000, "mnist": 60_000, "fashion-mnist": 60_000, "conll": 14_041}  # the real training sets' sizes


def build(task, name, hparams, device):
    torch.manual_seed(0)
    spec = methods.get(name)
    model = engine.build_model(task, spec.model_needs).to(device)
    if hasattr(task, "prepare_model"):
        model = task.prepare_model(model)
    entry = MethodEntry(name, name, {**spec.defaults(), **hparams})
    opt, l2 = engine.build_optimizer(task, model, entry, 500, 1, 0)
    return model, opt, l2, list(model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="cifar10", choices=("mnist", "fashion-mnist", "conll", "cifar10"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a K-FAC hyperparameter")
    args = ap.parse_args()
    args.device = "cpu"  # the parts are timed on the CPU only
    device = timing_setup(args)
    task = make_task(args.task, args.data_dir, device, ["kfac"])
    # an epoch of the real training set, also when the steps are timed on generated data of its shapes
    per_epoch = task.steps_per_epoch(args.batch_size) if args.data_dir else -(-TRAIN_EXAMPLES[args.task] //
                                                                              args.batch_size)
    batches = endless_batches(task, args.batch_size, torch.Generator().manual_seed(0))

    def batch():
        return next(batches)

    extra = dict(s.split("=", 1) for s in args.set)
    extra = {k: yaml.safe_load(v) for k, v in extra.items()}
    sgd = build(task, "sgd", {}, device)
    kfacs = {approx: build(task, "kfac", {**extra, "conv_factors": approx}, device) for approx in ("expand", "reduce")}
    cfg = methods.get("kfac").configure({**methods.get("kfac").defaults(), **extra})

    def timed(model, opt, l2, params, factor: bool | None) -> float:
        b = batch()
        if factor is not None:  # K-FAC: force the kind of step (its counter decides which one it is)
            opt.steps = 0 if factor else 1
            opt.update_inverses = lambda: None  # inverses are timed on their own
        t0 = time.perf_counter()
        opt.step(engine.make_closure(model, task, opt, b, params, l2))
        return time.perf_counter() - t0

    for model, opt, l2, params in kfacs.values():  # first factors and inverses: every step preconditions
        opt.steps = 0
        opt.step(engine.make_closure(model, task, opt, batch(), params, l2))
    times: dict[str, list[float]] = {k: [] for k in ("sgd", "plain", "factor expand", "factor reduce", "inverses")}
    timed(*sgd, None)  # warm-up
    for _ in range(args.steps):
        times["sgd"].append(timed(*sgd, None))
        times["plain"].append(timed(*kfacs["expand"], False))
        times["factor expand"].append(timed(*kfacs["expand"], True))
        times["factor reduce"].append(timed(*kfacs["reduce"], True))
        opt = kfacs["expand"][1]
        t0 = time.perf_counter()
        type(opt).update_inverses(opt)
        times["inverses"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rounds_later = per_epoch / cfg.inverse_every
    rounds_first = rounds_later + cfg.inverse_every / cfg.factor_every - 1
    print(f"task {args.task}, batch {args.batch_size}, {per_epoch} steps an epoch, threads {torch.get_num_threads()}, "
          f"factor_every {cfg.factor_every}, inverse_every {cfg.inverse_every}; median of {args.steps}")
    print("| part | seconds | ratio to an SGD step |")
    print("|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {v / med['sgd']:.2f} |")
    sgd_epoch = per_epoch * med["sgd"]
    print("\n| conv factors | epoch (s), first | ratio to SGD | epoch (s), later | ratio to SGD |")
    print("|---|---:|---:|---:|---:|")
    for approx in ("expand", "reduce"):
        base = per_epoch * med["plain"] + per_epoch / cfg.factor_every * (med[f"factor {approx}"] - med["plain"])
        first, later = base + rounds_first * med["inverses"], base + rounds_later * med["inverses"]
        print(f"| {approx} | {first:.0f} | {first / sgd_epoch:.2f} | {later:.0f} | {later / sgd_epoch:.2f} |")
    print(f"\nSGD epoch: {sgd_epoch:.0f} s")


if __name__ == "__main__":
    main()
