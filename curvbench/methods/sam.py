"""SAM, sharpness-aware minimisation (Foret et al. 2021; thesis eqs. 22-27), over a base method.

    eps_hat = rho * g / ||g||                                  (ASAM: rho * T^2 g / ||T g||, T = |theta| + eta)
    g_sam   = grad L(theta + eps_hat)                          (second forward/backward)
    theta  <- base_step(theta, g_sam)                          (the schedule drives the base method's lr)

Batch-norm running statistics are left untouched by the second pass."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from curvbench.methods.base import COUPLED, BuildContext, HParam, MethodSpec, lr_param, weight_decay_param
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
    def __init__(self, model: nn.Module, base: torch.optim.Optimizer, rho: float, adaptive: bool = False, eta: float = 0.01):
        self.model, self.base = model, base
        self.batchnorms = batchnorms(model)
        self.rho, self.adaptive, self.eta = rho, adaptive, eta
        self.param_groups = base.param_groups  # shared: the schedule sets the base method's lr
        self.defaults = base.defaults
        self.state = base.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def perturbation(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """eps_hat from the current gradients (the first pass)."""
        grads = [p.grad for p in params]
        if self.adaptive:
            scale = [p.abs().add_(self.eta) for p in params]
            tg = torch._foreach_mul(grads, scale)  # T g
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tg)))
            eps = torch._foreach_mul(tg, scale)  # T^2 g
        else:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            return torch._foreach_mul(grads, self.rho / (norm + 1e-12))
        torch._foreach_mul_(eps, self.rho / (norm + 1e-12))
        return eps

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()  # gradient at theta
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        eps = self.perturbation(params)
        with torch.no_grad():
            torch._foreach_add_(params, eps)  # theta + eps_hat
        with torch.enable_grad(), frozen_batchnorm_stats(self.batchnorms):
            closure()  # gradient at theta + eps_hat
        with torch.no_grad():
            torch._foreach_sub_(params, eps)  # back to theta
        self.base.step()
        return loss

    def state_dict(self):
        return self.base.state_dict()


def build(ctx: BuildContext, hp: dict):
    if hp["base"] == "sgd":
        base = torch.optim.SGD(ctx.model.parameters(), lr=hp["lr"], momentum=hp["momentum"], foreach=True)
    else:  # adamw; L2 stays coupled (in the gradient), so AdamW's own decay is off
        base = torch.optim.AdamW(ctx.model.parameters(), lr=hp["lr"], weight_decay=0.0, foreach=True)
    return SAM(ctx.model, base, rho=hp["rho"], adaptive=hp["adaptive"])


SPEC = MethodSpec(
    name="sam",
    description="sharpness-aware minimisation (Foret et al. 2021) over SGD or AdamW; ASAM with adaptive: true",
    regularisation=COUPLED,
    hparams=(
        lr_param(0.1, "base method's learning rate (as SGD's default)"),
        weight_decay_param(0.0, "L2 lambda: loss + lambda*||theta||^2, in both passes"),
        HParam("rho", 0.05, Number(gt=0), "neighbourhood radius rho (Foret et al.: 0.05)"),
        HParam("adaptive", False, Boolean(), "ASAM: scale the perturbation by |theta| (Kwon et al. 2021)"),
        HParam("base", "sgd", Choice(("sgd", "adamw")), "base method"),
        HParam("momentum", 0.0, Number(ge=0, lt=1), "momentum of the SGD base"),
    ),
    build=build,
)
