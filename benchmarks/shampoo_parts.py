"""Where Shampoo's time goes on a task, parameter by parameter, against an SGD step.

    python benchmarks/shampoo_parts.py [--task conll|mnist|fashion-mnist|cifar10] [--data-dir DIR]
                                       [--batch-size 2] [--rounds 20] [--threads 1] [--set KEY=VALUE ...]

On one real gradient of the task's model (a batch of its data, or generated data of the same shapes), every part
of Shampoo's update is timed on its own, per parameter, as the median over `--rounds` repetitions: the statistics
update (G_(i) G_(i)^T per preconditioned dimension, or the diagonal for vectors), the grafting, the direction
(the gradient contracted with every inverse root) and the inverse roots (an eigendecomposition per dimension),
the last divided by `precondition_frequency` since it runs that rarely. An SGD step (forward, backward, update) on
the same batch sets the scale. The table says which parameter and which part to work on; benchmarks/step_cost.py
gives the whole step's ratio, amortised work included."""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml
from kfac_parts import build  # noqa: E402 - the benchmarks folder's sibling scripts
from step_cost import endless_batches, make_task, timing_setup  # noqa: E402

from curvbench import methods
from curvbench.training import engine


def median_seconds(fn, rounds: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="conll", choices=("mnist", "fashion-mnist", "conll", "cifar10"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Shampoo hyperparameter")
    args = ap.parse_args()
    args.device = "cpu"  # the parts are timed on the CPU only
    device = timing_setup(args)
    task = make_task(args.task, args.data_dir, device, ["shampoo"])
    batches = endless_batches(task, args.batch_size, torch.Generator().manual_seed(0))
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = methods.get("shampoo").configure({**methods.get("shampoo").defaults(), **extra})

    sgd_model, sgd_opt, sgd_l2, sgd_params = build(task, "sgd", {}, device)
    batch = next(batches)
    sgd_step = median_seconds(lambda: sgd_opt.step(engine.make_closure(sgd_model, task, sgd_opt, batch, sgd_params,
                                                                       sgd_l2)), args.rounds)
    model, opt, l2, params = build(task, "shampoo", extra, device)
    opt.step(engine.make_closure(model, task, opt, batch, params, l2))  # gradients, statistics and blocks exist
    shampoo = opt.optimizers[0] if hasattr(opt, "optimizers") else opt
    names = {id(p): n for n, p in model.named_parameters()}
    rows, totals = [], {"stats": 0.0, "graft": 0.0, "direction": 0.0, "roots": 0.0}
    with torch.no_grad():
        for group in shampoo.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if p.dim() > 0 else p.grad.view(1)
                for block in shampoo._blocks(p):
                    gb = g[block.index]
                    part = {
                        "stats": median_seconds(lambda: block.update_stats(gb, cfg.beta2), args.rounds),
                        "graft": median_seconds(lambda: shampoo._graft(block, gb), args.rounds),
                        "direction": median_seconds(lambda: block.direction(gb), args.rounds),
                        "roots": median_seconds(lambda: block.compute_roots(cfg.float64, cfg.epsilon),
                                                max(3, args.rounds // 5)) / cfg.precondition_frequency,
                    }
                    for k, v in part.items():
                        totals[k] += v
                    shape = "x".join(str(s.stop - s.start) for s in block.index)
                    rows.append((names.get(id(p), "?"), shape, part))
    print(f"task {args.task}, batch {args.batch_size}, threads {torch.get_num_threads()}, precondition_frequency "
          f"{cfg.precondition_frequency}, skip_dim_above {cfg.skip_dim_above}, grafting {cfg.grafting}; median of "
          f"{args.rounds}; SGD step {sgd_step * 1e3:.2f} ms")
    print("| parameter | block | stats ms | graft ms | direction ms | roots ms (amortised) | share of the overhead |")
    print("|---|---|---:|---:|---:|---:|---:|")
    overhead = sum(totals.values())
    for name, shape, part in sorted(rows, key=lambda r: -sum(r[2].values())):
        t = sum(part.values())
        print(f"| {name} | {shape} | {part['stats'] * 1e3:.2f} | {part['graft'] * 1e3:.2f} | "
              f"{part['direction'] * 1e3:.2f} | {part['roots'] * 1e3:.2f} | {t / overhead:.0%} |")
    print(f"| all | | {totals['stats'] * 1e3:.2f} | {totals['graft'] * 1e3:.2f} | {totals['direction'] * 1e3:.2f} | "
          f"{totals['roots'] * 1e3:.2f} | {overhead * 1e3:.2f} ms = {overhead / sgd_step:.2f}x an SGD step |")


if __name__ == "__main__":
    main()
