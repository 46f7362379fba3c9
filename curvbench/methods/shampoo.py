"""Shampoo (Gupta, Koren & Singer 2018; thesis eqs. 28-30 and the tensor case).

For a parameter of order k with gradient G, one statistic per dimension i:

    H_i <- beta2 * H_i + G_(i) G_(i)^T          (G_(i): G unfolded along dimension i; H_i starts at eps*I)
    update = G x_1 H_1^(-1/2k) x_2 H_2^(-1/2k) ... x_k H_k^(-1/2k)
    theta <- theta - lr * update

so a matrix gets L^(-1/4) G R^(-1/4) (eqs. 28-30). The statistics change every step; the inverse roots are
recomputed every `precondition_frequency` steps by a symmetric eigendecomposition (float64 if asked) and used in
between: at steps start, start + f, start + 2f, ... (1-based; start = `start_preconditioning_step`,
f = `precondition_frequency`). Dimensions larger than `max_preconditioner_dim` are cut into blocks, each block
preconditioned on its own; dimensions longer than `skip_dim_above` (an embedding's vocabulary) get no
preconditioner, k counting the preconditioned dimensions only (one-sided Shampoo, as Anil et al.'s
implementation does for embeddings).

1-D parameters (biases, norm weights) get the diagonal (AdaGrad) form g / sqrt(h), h <- beta2*h + g*g. This
departs from the paper, whose order-1 case is full-matrix AdaGrad (a d x d statistic); the diagonal form is
what practical Shampoo implementations use for vectors, and it costs nothing. Optional grafting (Anil et al.
2020) keeps each block's Shampoo direction but takes its step size from SGD, AdaGrad or Adam, 1-D blocks
included (so no block's step jumps when preconditioning starts); before `start_preconditioning_step` the
grafted method (plain SGD without grafting) moves alone.

With precondition_frequency 1, start 1, no blocking, beta2 1 and no grafting this is the paper's update for
every tensor of order 2 or more, and diagonal AdaGrad for vectors.

Defaults: roots refreshed every 20 steps, first used at step 20 (statistics of one step are rank-deficient, and
stale roots of such statistics amplify new directions by epsilon^(-1/2k)), SGD grafting so lr means what it
means for SGD."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import torch

from curvbench.methods.base import COUPLED, BuildContext, MethodConfig, MethodSpec, hp, lr_field, weight_decay_field
from curvbench.schema import Boolean, Choice, Number


@dataclass(frozen=True)
class ShampooConfig(MethodConfig):
    """The preconditioner's settings (what the optimizer itself takes), checked when built."""

    epsilon: float = hp(1e-12, Number(gt=0), "statistics start at epsilon*I")
    beta2: float = hp(1.0, Number(gt=0, le=1), "statistics decay (1 = running sums, as the paper)")
    precondition_frequency: int = hp(20, Number(integer=True, ge=1), "steps between inverse-root recomputations")
    start_preconditioning_step: int = hp(20, Number(integer=True, ge=1), "first step that uses the preconditioners")
    max_preconditioner_dim: int = hp(1024, Number(integer=True, ge=1), "dimensions above this are blocked")
    skip_dim_above: int = hp(4096, Number(integer=True, ge=1),
                             "dimensions longer than this (an embedding's vocabulary) are not preconditioned")
    grafting: str = hp("sgd", Choice(("none", "sgd", "adagrad", "adam")),
                       "per-block step size from this method (none = the paper)")
    graft_beta2: float = hp(0.999, Number(gt=0, lt=1), "second-moment decay of Adam grafting")
    graft_epsilon: float = hp(1e-8, Number(gt=0), "denominator epsilon of AdaGrad and Adam grafting")
    momentum: float = hp(0.0, Number(ge=0, lt=1), "momentum on the preconditioned update")
    float64: bool = hp(True, Boolean(), "eigendecompositions in float64")


@dataclass(frozen=True)
class ShampooHParams(ShampooConfig):
    """What a recipe sets: the step size and L2 on top of the preconditioner's settings."""

    lr: float = lr_field(0.1)
    weight_decay: float = weight_decay_field(0.0, "L2 lambda: loss + lambda*||theta||^2")


class _Block:
    """One block of a parameter: its index into the parameter, statistics and inverse roots per dimension."""

    def __init__(self, index: tuple[slice, ...], shape: tuple[int, ...], cfg: ShampooConfig, like: torch.Tensor,
                 skip: tuple[bool, ...] = ()):
        self.index = index
        skip = skip or (False,) * len(shape)
        self.dims = [i for i in range(len(shape)) if not skip[i]]  # the preconditioned dimensions
        self.skipped = len(self.dims) < len(shape)
        self.order = len(self.dims)  # k of the exponent -1/(2k)
        self.diagonal = len(shape) == 1
        eye = lambda d: torch.eye(d, dtype=like.dtype, device=like.device)  # noqa: E731
        if self.diagonal:
            self.stats = [torch.full(shape, cfg.epsilon, dtype=like.dtype, device=like.device)]
            self.roots = None
        else:
            self.stats = [cfg.epsilon * eye(shape[i]) for i in self.dims]
            self.roots = [eye(shape[i]) for i in self.dims]
        self.graft = torch.zeros(shape, dtype=like.dtype, device=like.device) if cfg.grafting in ("adagrad", "adam") else None
        self.graft_m = torch.zeros(shape, dtype=like.dtype, device=like.device) if cfg.grafting == "adam" else None

    def update_stats(self, g: torch.Tensor, beta2: float) -> None:
        if self.diagonal:
            self.stats[0].mul_(beta2).addcmul_(g, g, value=1 - beta2 if beta2 < 1 else 1.0)
            return
        w = 1 - beta2 if beta2 < 1 else 1.0
        for i, h in zip(self.dims, self.stats):
            gi = g.movedim(i, 0).reshape(g.shape[i], -1)  # G_(i)
            h.mul_(beta2).addmm_(gi, gi.T, alpha=w)

    def compute_roots(self, float64: bool, epsilon: float) -> int:
        """The inverse roots of the statistics; returns how many kept their previous value instead: statistics
        that are not finite (a run blowing up, which the engine's loss check ends) or whose eigendecomposition did
        not converge (a run that has collapsed, as Distributed Shampoo does on a failed root)."""
        if self.diagonal:
            return 0
        exponent = -1.0 / (2 * self.order)
        kept = 0
        for i, h in enumerate(self.stats):
            if not bool(torch.isfinite(h).all()):
                kept += 1
                continue
            try:
                self.roots[i] = matrix_power(h, exponent, float64, floor=epsilon)
            except torch.linalg.LinAlgError:
                kept += 1
        return kept

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        if self.diagonal:
            return g / self.stats[0].sqrt()  # exponent -1/2 for k = 1, diagonal form
        if not self.skipped:
            out = g
            for root in self.roots:  # contracting dimension 0 each time cycles the dimensions back into order
                out = torch.tensordot(out, root, dims=([0], [0]))
            return out
        out = g
        for i, root in zip(self.dims, self.roots):  # G x_i root_i for the preconditioned dimensions only
            out = torch.tensordot(out, root, dims=([i], [0])).movedim(-1, i)
        return out


def matrix_power(h: torch.Tensor, exponent: float, float64: bool = True, floor: float = 0.0) -> torch.Tensor:
    """h^exponent for a symmetric positive semi-definite h, through its eigendecomposition.

    Eigenvalues are floored at `floor` (the statistics are >= epsilon*I by construction: anything below is
    rounding error, which a negative exponent would blow up)."""
    work = h.double() if float64 else h
    evals, evecs = torch.linalg.eigh(work)
    evals = evals.clamp(min=max(floor, torch.finfo(work.dtype).tiny))
    return ((evecs * evals.pow(exponent)) @ evecs.T).to(h.dtype)


def block_slices(shape: tuple[int, ...], max_dim: int, skip: tuple[bool, ...] = ()) -> list[tuple[slice, ...]]:
    """Cut every (preconditioned) dimension longer than max_dim into pieces of at most max_dim; all
    combinations of pieces. Skipped dimensions stay whole."""
    skip = skip or (False,) * len(shape)
    per_dim = [
        [slice(0, d)] if sk else [slice(s, min(s + max_dim, d)) for s in range(0, d, max_dim)]
        for d, sk in zip(shape, skip)
    ]
    return [tuple(c) for c in itertools.product(*per_dim)]


class Shampoo(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.1, config: ShampooConfig | None = None):
        self.config = config or ShampooConfig()
        super().__init__(params, dict(lr=lr))
        self.steps = 0
        self.roots_kept = 0  # root computations that kept the previous root (compute_roots), tagged on the run
        self.tags: dict = {}

    def _blocks(self, p: torch.Tensor) -> list[_Block]:
        st = self.state[p]
        if "blocks" not in st:
            shape = tuple(p.shape) if p.dim() > 0 else (1,)
            cfg = self.config
            skip = tuple(d > cfg.skip_dim_above for d in shape) if len(shape) > 1 else (False,)
            if all(skip):
                skip = tuple(False if d == min(shape) else True for d in shape)  # keep the smallest
            st["blocks"] = [
                _Block(idx, tuple(s.stop - s.start for s in idx), cfg, p, skip)
                for idx in block_slices(shape, cfg.max_preconditioner_dim, skip)
            ]
        return st["blocks"]

    def _graft(self, block: _Block, g: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.grafting == "adagrad":
            block.graft.addcmul_(g, g)
            return g / (block.graft.sqrt() + cfg.graft_epsilon)
        if cfg.grafting == "adam":
            t = self.steps + 1
            block.graft_m.mul_(0.9).add_(g, alpha=0.1)
            block.graft.mul_(cfg.graft_beta2).addcmul_(g, g, value=1 - cfg.graft_beta2)
            m_hat = block.graft_m / (1 - 0.9**t)
            v_hat = block.graft / (1 - cfg.graft_beta2**t)
            return m_hat / (v_hat.sqrt() + cfg.graft_epsilon)
        return g  # sgd, or no grafting

    def _block_update(self, block: _Block, g: torch.Tensor, preconditioning: bool, refresh: bool) -> torch.Tensor:
        cfg = self.config
        block.update_stats(g, cfg.beta2)
        grafted = self._graft(block, g)
        if not preconditioning:
            return grafted
        if refresh:
            kept = block.compute_roots(cfg.float64, cfg.epsilon)
            if kept:
                self.roots_kept += kept
                self.tags["shampoo_roots_kept"] = (f"{self.roots_kept} root computations kept the previous root "
                                                   f"(non-finite statistics, or an eigendecomposition that did "
                                                   f"not converge); the last at step {self.steps + 1}")
        d = block.direction(g)
        if cfg.grafting != "none":  # every block, vectors included, moves by the grafted method's step size
            d = d * (grafted.norm() / d.norm().clamp(min=1e-30))
        return d

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        cfg = self.config
        step = self.steps + 1  # 1-based
        since_start = step - cfg.start_preconditioning_step
        preconditioning = since_start >= 0
        refresh = preconditioning and since_start % cfg.precondition_frequency == 0  # start, start + f, ...
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if p.dim() > 0 else p.grad.view(1)
                blocks = self._blocks(p)
                if len(blocks) == 1:  # the common case: no copies in and out of blocks
                    update = self._block_update(blocks[0], grad, preconditioning, refresh)
                else:
                    update = torch.empty_like(grad)
                    for block in blocks:
                        update[block.index] = self._block_update(block, grad[block.index], preconditioning, refresh)
                if cfg.momentum:
                    buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(update))
                    update = buf.mul_(cfg.momentum).add_(update)
                p.add_(update.view_as(p), alpha=-group["lr"])
        self.steps += 1
        return loss


def build(ctx: BuildContext, cfg: ShampooHParams):
    shampoo = ShampooConfig(**{f.name: getattr(cfg, f.name) for f in fields(ShampooConfig)})
    opt = Shampoo([p for p in ctx.model.parameters() if p.requires_grad], lr=cfg.lr, config=shampoo)
    opt.tags["shampoo_config"] = repr(shampoo)
    return opt


SPEC = MethodSpec(
    name="shampoo",
    description="Shampoo: one preconditioner per tensor dimension, inverse roots amortised (Gupta et al. 2018)",
    regularisation=COUPLED,
    # lr and L2 first, as every method lists them, then the preconditioner's settings
    hparams=ShampooHParams.hparams(first=("lr", "weight_decay")),
    build=build,
    config=ShampooHParams,
)
