"""SAM, sharpness-aware minimisation (Foret et al. 2021; thesis eqs. 22-27), over a base method.

    g       = grad L(theta)
    eps_hat = rho * g / ||g||                                  (ASAM: rho * T^2 g / ||T g||, T = |theta| + eta)
    g_sam   = grad L(theta + eps_hat) + 2 * lambda * theta     (second forward/backward; L2 outside the max)
    theta  <- base_step(theta, g_sam)                          (the schedule drives the base method's lr)

The L2 term stays outside the inner maximisation as the thesis writes it (eq. 22); `l2_in_perturbation: true`
puts it inside instead (SAM of the regularised objective). ASAM follows its authors' code: only parameters whose
name contains "weight" are rescaled by T (biases keep T = 1), rho defaults to 0.5 and eta to 0.01.
Batch-norm running statistics are left untouched by the second pass."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from curvbench.methods.base import COUPLED, BuildContext, MethodConfig, MethodSpec, hp, lr_field, weight_decay_field
from curvbench.schema import Boolean, Choice, Number


def batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def frozen_batchnorm_stats(bns: list[nn.Module]):
    """Batch statistics are still used for normalisation, but running_mean/var and the counter stay as they are."""
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


class SAM(torch.optim.Optimizer):
    """`l2` is the coupled L2 coefficient lambda; SAM adds its gradient 2*lambda*theta itself (the engine does not),
    at theta (the thesis, eq. 22: the regulariser stays outside the inner maximisation) or, with
    `l2_in_perturbation`, to both passes (SAM of the regularised objective: eps from grad L + 2*lambda*theta, and
    the second gradient taken at theta + eps of L + lambda*||.||^2)."""

    def __init__(self, model: nn.Module, base: torch.optim.Optimizer, rho: float, adaptive: bool = False,
                 eta: float = 0.01, l2: float = 0.0, l2_in_perturbation: bool = False):
        self.model, self.base = model, base
        self.batchnorms = batchnorms(model)
        self.rho, self.adaptive, self.eta = rho, adaptive, eta
        self.l2, self.l2_in_perturbation = l2, l2_in_perturbation
        # ASAM rescales the parameters named "weight" only (the authors' code: biases keep T = 1)
        self.rescaled = {id(p) for n, p in model.named_parameters() if "weight" in n}
        self.param_groups = base.param_groups  # shared: the schedule sets the base method's lr
        self.defaults = base.defaults
        self.state = base.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def perturbation(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """eps_hat from the current gradients (the first pass)."""
        grads = [p.grad for p in params]
        if not self.adaptive:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            return torch._foreach_mul(grads, self.rho / (norm + 1e-12))
        # T = |theta| + eta for weights, 1 for the rest: eps = rho * T^2 g / ||T g||
        tg = [p.abs().add_(self.eta).mul_(g) if id(p) in self.rescaled else g.clone() for p, g in zip(params, grads)]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tg)))
        eps = [t.mul_(p.abs().add_(self.eta)) if id(p) in self.rescaled else t for p, t in zip(params, tg)]
        torch._foreach_mul_(eps, self.rho / (norm + 1e-12))
        return eps

    def _add_l2(self, params: list[torch.Tensor]) -> None:
        torch._foreach_add_([p.grad for p in params], params, alpha=2.0 * self.l2)

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()  # gradient of L at theta
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        with torch.no_grad():
            if self.l2 and self.l2_in_perturbation:
                self._add_l2(params)
            eps = self.perturbation(params)
            torch._foreach_add_(params, eps)  # theta + eps_hat
        with torch.enable_grad(), frozen_batchnorm_stats(self.batchnorms):
            closure()  # gradient of L at theta + eps_hat
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        with torch.no_grad():
            if self.l2 and self.l2_in_perturbation:
                self._add_l2(params)  # the regulariser's gradient at theta + eps_hat
            torch._foreach_sub_(params, eps)  # back to theta
            if self.l2 and not self.l2_in_perturbation:
                self._add_l2(params)  # the regulariser's gradient at theta (eq. 22)
        self.base.step()
        return loss

    def state_dict(self):
        return self.base.state_dict()


@dataclass(frozen=True)
class SAMConfig(MethodConfig):
    lr: float = lr_field(0.1, "base method's learning rate (as SGD's default)")
    weight_decay: float = weight_decay_field(
        0.0, "L2 lambda: loss + lambda*||theta||^2; its gradient is taken at theta (thesis eq. 22)")
    l2_in_perturbation: bool = hp(False, Boolean(),
                                  "true: eps from grad L + 2*lambda*theta and the L2 gradient at theta + eps (SAM of "
                                  "the regularised objective); false: eps from grad L alone, L2 gradient at theta "
                                  "(the thesis, eq. 22)")
    rho: float | None = hp(None, Number(gt=0, nullable=True),
                           "neighbourhood radius; null = the variant's authors' default: 0.05 for SAM, 0.5 for ASAM")
    adaptive: bool = hp(False, Boolean(),
                        "ASAM (Kwon et al. 2021): eps = rho*T^2 g/||T g||, T = |theta| + eta on parameters named weight")
    eta: float = hp(0.01, Number(ge=0), "ASAM's eta (its authors' default)")
    base: str = hp("sgd", Choice(("sgd", "adamw")), "base method")
    momentum: float = hp(0.0, Number(ge=0, lt=1), "momentum of the SGD base")


def build(ctx: BuildContext, cfg: SAMConfig):
    if cfg.base == "sgd":
        base = torch.optim.SGD(ctx.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, foreach=True)
    else:  # adamw; L2 stays coupled (in the gradient), so AdamW's own decay is off
        base = torch.optim.AdamW(ctx.model.parameters(), lr=cfg.lr, weight_decay=0.0, foreach=True)
    rho = cfg.rho if cfg.rho is not None else (ASAM_RHO if cfg.adaptive else SAM_RHO)
    return SAM(ctx.model, base, rho=rho, adaptive=cfg.adaptive, eta=cfg.eta, l2=cfg.weight_decay,
               l2_in_perturbation=cfg.l2_in_perturbation)


SAM_RHO = 0.05  # Foret et al.
ASAM_RHO = 0.5  # Kwon et al.'s code (their CIFAR runs), with eta 0.01


SPEC = MethodSpec(
    name="sam",
    description="sharpness-aware minimisation (Foret et al. 2021) over SGD or AdamW; ASAM with adaptive: true",
    regularisation=COUPLED,
    adds_l2=True,
    hparams=SAMConfig.hparams(),
    build=build,
    config=SAMConfig,
)
