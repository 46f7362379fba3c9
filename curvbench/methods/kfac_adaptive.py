"""Adaptive K-FAC: no learning rate, momentum or damping to tune (Martens & Grosse 2015, sections 6-7).

The proposal is K-FAC's: Delta = -F_hat^-1 grad h, with the factors, inverses and intervals of methods/kfac.py
(h: the training loss plus the recipe's L2 term lambda_2 ||theta||^2). Each step the update is

    delta = alpha * Delta + mu * delta_0          (delta_0: the previous update; mu = 0 on the first step)

with alpha and mu minimising the local quadratic model of h (mu only with `momentum: qmodel`; the default,
`none`, keeps mu = 0: the paper's momentum diverged on MNIST at batch 100, see the README),

    M(delta) = 1/2 delta^T (C + (lam + eta) I) delta + grad_h^T delta,

a 2x2 linear solve. C is the exact curvature of the current batch: the generalised Gauss-Newton of the task's
loss through the network's outputs, which for softmax cross-entropy is the Fisher. It is never formed: the
products C v come from forward-mode Jacobian-vector products J v (torch.func.jvp) and the loss's Hessian with
respect to the outputs (double backward on outputs only):  v^T C w = (J v)^T H_out (J w).
eta = 2 * lambda_2 is the curvature of the L2 term, so the regulariser is part of the model, as in the paper.

The damping lam adapts by the Levenberg-Marquardt rule every T1 steps (`damping_every`) from the reduction
ratio rho = (h(theta + delta) - h(theta)) / (M(delta) - M(0)), measured on the same batch:

    rho > 3/4: lam <- omega1 * lam;   rho < 1/4: lam <- lam / omega1;   omega1 = (19/20)^T1.

The factors' Tikhonov damping gamma^2 (K-FAC's `damping`, split between A and G by pi) is adapted by the
paper's greedy search (`factor_damping: greedy`, the default; their section 6.6): every T2 steps
(`gamma_every`) the candidate of gamma^2 and gamma^2 * omega2^(+-2) whose update the model rates best is kept.
`factor_damping: coupled` gives the simpler gamma^2 = lam + eta instead, from the next inverse update on (on
MNIST it let K-FAC's low-curvature directions blow up).

`qmodel_every` k > 1 solves for alpha and mu every k steps only and reuses them in between (rho, and so lam,
then move on those steps only, with omega1 = (19/20)^(steps since the last change)); an update made with a
reused alpha is never longer than the last solved one (without that cap it diverged on MNIST).
`max_update_norm` > 0 scales down an update longer than it (a safety net the paper does not have). The recipe's learning-rate schedule does
not apply: the step is the model's."""

from __future__ import annotations

import functools
import math
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from curvbench import record
from curvbench.methods.base import (
    COUPLED,
    BuildContext,
    EpochMetric,
    MethodConfig,
    MethodSpec,
    NonFinite,
    hp,
    weight_decay_field,
)
from curvbench.methods.kfac import CONV_FACTORS, CONV_FACTORS_HELP, KFAC, _full, model_blocks
from curvbench.schema import Choice, Number


@dataclass(frozen=True)
class AdaptiveKFACConfig(MethodConfig):
    weight_decay: float = weight_decay_field(0.0, "L2 lambda_2: loss + lambda_2*||theta||^2; its curvature "
                                                  "eta = 2*lambda_2 is part of the quadratic model")
    initial_damping: float = hp(150.0, Number(gt=0), "lam at the start (Martens & Grosse: 150)")
    damping_every: int = hp(5, Number(integer=True, ge=1), "T1: steps between Levenberg-Marquardt updates of lam")
    min_damping: float = hp(1e-8, Number(gt=0), "lam never falls below this")
    momentum: str = hp("none", Choice(("none", "qmodel")),
                       "qmodel: mu minimises the model with alpha (the paper); none: alpha alone. Measured on "
                       "MNIST at batch 100, qmodel is unstable (README), so none is the default")
    qmodel_every: int = hp(1, Number(integer=True, ge=1), "steps between solves for alpha and mu (reused between)")
    factor_damping: str = hp("greedy", Choice(("greedy", "coupled")),
                             "gamma of the factors: greedy (Martens & Grosse 6.6: every gamma_every steps, of gamma "
                             "and gamma*omega2^(+-1) the one whose update the model rates best) or coupled "
                             "(gamma^2 = lam + eta)")
    gamma_every: int = hp(20, Number(integer=True, ge=1), "T2: steps between greedy gamma updates (paper: 20)")
    max_update_norm: float = hp(0.0, Number(ge=0), "scale down an update longer than this (0 = off)")
    factor_decay: float = hp(0.95, Number(ge=0, lt=1), "running-average decay of A and G")
    factor_every: int = hp(10, Number(integer=True, ge=1), "steps between factor updates")
    inverse_every: int = hp(20, Number(integer=True, ge=1), "T3: steps between inverse updates (Martens & Grosse: 20)")
    fisher: str = hp("true", Choice(("true", "empirical")), "targets for G: sampled from the model, or the labels")
    conv_factors: str = hp("expand", Choice(CONV_FACTORS), CONV_FACTORS_HELP)


@contextmanager
def _quiet_jvp_decompositions():
    """Hide the FutureWarning PyTorch raises about its own use of torch.jit.script when forward-mode AD first loads
    its decompositions (torch._decomp.decompositions_for_jvp): it names no code of the user's or of curvbench's,
    and it landed in every adaptive K-FAC run's log. Any other warning passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        yield


@functools.cache
def _load_jvp_decompositions() -> None:
    """Load forward-mode AD's decompositions once per process, that warning hidden, before any training step: the
    steps' jvp passes then leave the warning filters alone (changing them resets every record of warnings already
    shown, and a model's once-shown warning would come back every step)."""
    with _quiet_jvp_decompositions():
        torch.func.jvp(torch.sin, (torch.zeros(()),), (torch.ones(()),))


@contextmanager
def _unfused(model: torch.nn.Module):
    """Modules with a fused kernel that forward-mode differentiation lacks (the LSTM) run their plain loop."""
    switched = [m for m in model.modules() if getattr(m, "use_fused", False)]
    for m in switched:
        m.use_fused = False
    try:
        yield
    finally:
        for m in switched:
            m.use_fused = True


LOW_PRECISION = (torch.bfloat16, torch.float16)


def _tangent_cast(module, inputs, output):
    """A low-precision output cast to float32 and back: its value stays (exact), its tangent takes its dtype."""
    if isinstance(output, torch.Tensor) and output.dtype in LOW_PRECISION:
        return output.float().to(output.dtype)
    return None


@contextmanager
def _tangents_like_outputs(model: torch.nn.Module):
    """Under autocast, the forward-mode rules of the normalisation layers (batch, group and layer norm) give a bf16
    output a float32 tangent, and the next convolution refuses the pair (its input's and its weight's dtypes
    differ). Every leaf module's low-precision output is cast through float32 and back while this is on, which
    gives its tangent the output's dtype, as autocast gives the next layer's inputs anyway."""
    handles = [m.register_forward_hook(_tangent_cast) for m in model.modules() if next(m.children(), None) is None]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """<a, b> over lists of tensors, in float64, on the device (no host sync)."""
    return torch.stack([(x.double() * y.double()).sum() for x, y in zip(a, b)]).sum()


def _model_value(coef, m: torch.Tensor, b: torch.Tensor) -> float:
    """M(delta) - M(0) = 1/2 c^T m c + c^T b for delta = sum_i c_i v_i (m, b: the model in the basis v)."""
    c = torch.tensor(coef, dtype=torch.float64)
    return float(0.5 * c @ m @ c + c @ b)


class _Functional:
    """Calls the model with given parameter tensors in place of its own, and with copies of its buffers: the
    extra passes (the model's curvature under torch.func.jvp, the loss at the new point) run in training mode, so
    batch norm normalises by the batch as the training pass does, but the running statistics it updates are the
    copies. The model's own statistics are updated by the training pass alone, once per step; and no pass
    mutates a tensor captured from outside the transform, which torch.func refuses."""

    def __init__(self, model, names, tensors):
        self.model, self.params = model, dict(zip(names, tensors))

    def __call__(self, *args, **kwargs):
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        return torch.func.functional_call(self.model, {**self.params, **buffers}, args, kwargs)


class AdaptiveKFAC(KFAC):
    def __init__(self, model, task, weight_decay: float = AdaptiveKFACConfig.weight_decay,
                 initial_damping: float = AdaptiveKFACConfig.initial_damping,
                 damping_every: int = AdaptiveKFACConfig.damping_every,
                 min_damping: float = AdaptiveKFACConfig.min_damping, momentum: str = AdaptiveKFACConfig.momentum,
                 qmodel_every: int = AdaptiveKFACConfig.qmodel_every,
                 factor_damping: str = AdaptiveKFACConfig.factor_damping,
                 gamma_every: int = AdaptiveKFACConfig.gamma_every,
                 max_update_norm: float = AdaptiveKFACConfig.max_update_norm, **kfac):
        self.eta = 2.0 * weight_decay
        super().__init__(model, task.fisher_loss, lr=1.0, momentum=0.0, damping=initial_damping + self.eta,
                         kl_clip=None, **kfac)
        self.task, self.l2 = task, weight_decay
        _load_jvp_decompositions()
        self.lam, self.min_damping = initial_damping, min_damping
        self.damping_every, self.qmodel_every, self.max_update_norm = damping_every, qmodel_every, max_update_norm
        self.greedy, self.gamma_every = factor_damping == "greedy", gamma_every
        self.use_momentum = momentum == "qmodel"
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.batch = None
        self.alpha, self.mu = 0.0, 0.0
        self.m = self.b = None  # the last solve's model: matrix and linear term
        self.solved_norm: float | None = None  # length of the last solved update (qmodel_every > 1 caps by it)
        self.since_damping = 0  # steps since lam last had the chance to change
        self.history: list[dict] = []  # per qmodel step: alpha, mu, rho (None when not measured), lam, gamma^2
        self._epoch_start = 0

    # ---- the batch of the step, from the engine's closure
    def on_forward(self, outputs, batch) -> None:
        self.batch = batch
        super().on_forward(outputs, batch)

    # ---- the model's curvature
    def output_tangents(self, vectors: list[list[torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The network's outputs at theta and J v for each v (a list of tensors shaped like the parameters)."""
        primals = tuple(p.detach() for p in self.params)
        out, tangents = None, []
        with _unfused(self.model), _tangents_like_outputs(self.model):
            for v in vectors:
                def f(*ps):
                    return _full(self.task.forward(_Functional(self.model, self.names, ps), self.batch))

                out, jv = torch.func.jvp(f, primals, tuple(t.to(p.dtype) for t, p in zip(v, primals)))
                tangents.append(jv)
        return out, tangents

    def curvature_matrix(self, vectors: list[list[torch.Tensor]]) -> torch.Tensor:
        """[v_i^T C v_j]: C the generalised Gauss-Newton of the task's loss on this batch (the Fisher for softmax
        cross-entropy), from J v and the loss's Hessian with respect to the outputs."""
        out, jvs = self.output_tangents(vectors)
        leaf = out.detach().requires_grad_(True)
        with torch.enable_grad():
            grad = torch.autograd.grad(self.task.loss(leaf, self.batch), leaf, create_graph=True)[0]
            n = len(jvs)
            m = torch.zeros(n, n, dtype=torch.float64, device=out.device)
            for i in range(n):
                h_jv = torch.autograd.grad((grad * jvs[i]).sum(), leaf, retain_graph=i < n - 1)[0]
                for j in range(i, n):
                    m[i, j] = m[j, i] = (jvs[j] * h_jv).sum().double()
        return m

    def h(self, loss: float, params) -> float:
        """The objective the model predicts: the task's loss plus the L2 term."""
        return loss + self.l2 * float(_dot(params, params)) if self.l2 else loss

    def solve(self, grad, direction, previous) -> tuple[float, float, torch.Tensor, torch.Tensor]:
        """alpha, mu minimising M(alpha*Delta + mu*delta_0); returns them with the model's matrix and linear term
        (M of the final update is 1/2 c^T m c + c^T b for its coefficients c)."""
        vectors = [direction] + ([previous] if previous is not None else [])
        n = len(vectors)
        gram = torch.stack([torch.stack([_dot(vectors[i], vectors[j]) for j in range(n)]) for i in range(n)])
        m = (self.curvature_matrix(vectors) + (self.lam + self.eta) * gram).cpu()
        b = torch.stack([_dot(grad, v) for v in vectors]).cpu()
        if not bool(torch.isfinite(m).all() and torch.isfinite(b).all()):
            raise NonFinite(f"the quadratic model went non-finite (damping {self.lam:.3g}, gamma^2 {self.damping:.3g})")
        coef = -torch.linalg.lstsq(m, b.unsqueeze(1)).solution.squeeze(1)  # least squares: a singular m is fine
        return float(coef[0]), float(coef[1]) if n == 2 else 0.0, m, b

    @torch.no_grad()
    def _loss_at(self, params_now) -> float:
        out = self.task.forward(_Functional(self.model, self.names, params_now), self.batch)
        return float(self.task.loss(_full(out), self.batch))

    def proposal(self, grad) -> list[torch.Tensor]:
        """Delta = -F_hat^-1 grad h with the current inverses (the plain gradient for layers K-FAC does not cover)."""
        with torch.no_grad():
            for p, g in zip(self.params, grad):
                if p.grad is not None:
                    p.grad.copy_(g)
        self.precondition(1.0)
        with torch.no_grad():
            return [-p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def choose_gamma(self, grad, previous):
        """The greedy step of Martens & Grosse 6.6: of gamma^2 and gamma^2 * omega2^(+-2), omega2 = (19/20)^(T2/2),
        keep the one whose proposal, with its best alpha and mu, reaches the lowest model value; its inverses
        stay. Returns that proposal and its solve."""
        omega2 = (19 / 20) ** (self.gamma_every / 2)
        floor = self.eta + self.min_damping
        best = None
        for gamma2 in sorted({max(floor, self.damping * omega2**2), self.damping, self.damping / omega2**2}):
            self.damping = gamma2
            self.update_inverses()
            direction = self.proposal(grad)
            alpha, mu, m, b = self.solve(grad, direction, previous)
            value = _model_value([alpha, mu][: len(b)], m, b)
            if best is None or value < best[0]:
                best = (value, gamma2, [(blk.A_inv, blk.G_inv) for blk in self.blocks], direction, (alpha, mu, m, b))
        _, self.damping, inverses, direction, solved = best
        for blk, (a_inv, g_inv) in zip(self.blocks, inverses):
            blk.A_inv, blk.G_inv = a_inv, g_inv
        return direction, solved

    def step(self, closure):
        if not self.greedy:
            self.damping = self.lam + self.eta  # gamma^2 follows lam, from the next inverses on
        loss = self.gradients_and_factors(closure)
        with torch.no_grad():
            grad = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        previous = [self.state[p]["delta"] for p in self.params] if self.steps and self.use_momentum else None
        solve_now = self.steps % self.qmodel_every == 0
        if solve_now and self.greedy and self.steps and self.steps % self.gamma_every == 0:
            direction, (self.alpha, self.mu, self.m, self.b) = self.choose_gamma(grad, previous)
        else:
            direction = self.proposal(grad)
            if solve_now:
                self.alpha, self.mu, self.m, self.b = self.solve(grad, direction, previous)
        rho = None
        with torch.no_grad():
            delta = [self.alpha * d for d in direction]
            if previous is not None and self.mu:
                torch._foreach_add_(delta, previous, alpha=self.mu)
            scale, cap = 1.0, self.max_update_norm
            if not solve_now and self.solved_norm is not None:  # a reused alpha: no longer than the model's step
                cap = min(cap, self.solved_norm) if cap > 0 else self.solved_norm
            if cap > 0:
                norm = float(torch.sqrt(_dot(delta, delta)))
                scale = min(1.0, cap / max(norm, 1e-30))
                if scale < 1.0:
                    torch._foreach_mul_(delta, scale)
            if solve_now and self.qmodel_every > 1:
                self.solved_norm = float(torch.sqrt(_dot(delta, delta)))
            self.since_damping += 1
            if solve_now and self.since_damping >= self.damping_every:
                predicted = _model_value([self.alpha * scale, self.mu * scale][: len(self.b)], self.m, self.b)
                h_old = self.h(float(loss), self.params)
                new = [p.detach() + d for p, d in zip(self.params, delta)]
                h_new = self.h(self._loss_at(new), new)
                rho = (h_new - h_old) / predicted if predicted < 0 else float("-inf")
                self.update_damping(rho, self.since_damping)
                self.since_damping = 0
            torch._foreach_add_(self.params, delta)
            for p, d in zip(self.params, delta):
                self.state[p]["delta"] = d
        if solve_now:
            self.history.append({"alpha": self.alpha, "mu": self.mu, "rho": rho, "lam": self.lam,
                                 "gamma2": self.damping})
        self.steps += 1
        return loss

    def update_damping(self, rho: float, steps: int) -> None:
        """The Levenberg-Marquardt rule, omega1 = (19/20)^steps."""
        omega = (19 / 20) ** steps
        if rho > 0.75:
            self.lam = max(self.min_damping, self.lam * omega)
        elif rho < 0.25:
            self.lam = self.lam / omega

    def epoch_metrics(self) -> dict[str, float]:
        """lam at the epoch's end; alpha, mu and rho averaged over the epoch's solves (rho: where measured)."""
        seen = self.history[self._epoch_start:]
        self._epoch_start = len(self.history)
        out = {record.KFAC_DAMPING: self.lam, record.KFAC_GAMMA: math.sqrt(self.damping)}
        if seen:
            out[record.KFAC_ALPHA] = sum(s["alpha"] for s in seen) / len(seen)
            out[record.KFAC_MU] = sum(s["mu"] for s in seen) / len(seen)
            rhos = [s["rho"] for s in seen if s["rho"] is not None and math.isfinite(s["rho"])]
            if rhos:
                out[record.KFAC_RHO] = sum(rhos) / len(rhos)
        return out


def build(ctx: BuildContext, cfg: AdaptiveKFACConfig):
    return AdaptiveKFAC(ctx.model, ctx.task, seed=ctx.seed, extra_blocks=model_blocks(ctx.model), **asdict(cfg))


SPEC = MethodSpec(
    name="kfac-adaptive",
    description="K-FAC with step size, momentum and damping chosen every step from the quadratic model "
                "(Martens & Grosse 2015, sections 6-7): nothing to tune",
    regularisation=COUPLED,
    hparams=AdaptiveKFACConfig.hparams(),
    build=build,
    needs=("fisher_loss",),
    model_needs=("per_step_layers",),
    config=AdaptiveKFACConfig,
    epoch_metrics=(EpochMetric(record.KFAC_DAMPING, "lambda", "-"), EpochMetric(record.KFAC_GAMMA, "gamma", "--"),
                   EpochMetric(record.KFAC_ALPHA, "alpha", ":"), EpochMetric(record.KFAC_MU, "|mu|", "-.")),
)
