"""Lion (Chen et al. 2023; thesis eqs. 31-33), written with foreach tensor ops.

    c_t     = beta1 * m_{t-1} + (1 - beta1) * g_t
    theta_t = theta_{t-1} - lr * (sign(c_t) + lambda * theta_{t-1})      (decoupled weight decay)
    m_t     = beta2 * m_{t-1} + (1 - beta2) * g_t

beta1 and beta2 are Chen et al.'s (Algorithm 2): beta1 interpolates for the sign, beta2 decays the momentum.
The thesis's eqs. (31) and (33) name them the other way round: its beta2 is beta1 here and its beta1 is beta2,
so a recipe copied from the thesis must swap them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from curvbench.methods.base import DECOUPLED, BuildContext, MethodConfig, MethodSpec, hp, lr_field, weight_decay_field
from curvbench.schema import Number


@dataclass(frozen=True)
class LionConfig(MethodConfig):
    lr: float = lr_field(1e-3, "learning rate (1e-3 reaches 90% on mnist-mini in 2 epochs; the paper's 3-10x below "
                               "AdamW needs more)")
    weight_decay: float = weight_decay_field(0.0, "decoupled weight decay lambda (eq. 32)")
    beta1: float = hp(0.9, Number(ge=0, lt=1),
                      "Chen et al.'s beta1: c = beta1*m + (1-beta1)*g, whose sign is the step (the thesis's beta2)")
    beta2: float = hp(0.99, Number(ge=0, lt=1),
                      "Chen et al.'s beta2: m = beta2*m + (1-beta2)*g, the momentum decay (the thesis's beta1)")


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr: float = LionConfig.lr, betas=(LionConfig.beta1, LionConfig.beta2),
                 weight_decay: float = LionConfig.weight_decay):
        LionConfig.checked(lr=lr, beta1=betas[0], beta2=betas[1], weight_decay=weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if "exp_avg" not in self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)
            m = [self.state[p]["exp_avg"] for p in params]
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            c = torch._foreach_lerp(m, grads, 1 - beta1)  # eq. (31): beta1*m + (1-beta1)*g
            torch._foreach_sign_(c)
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)  # eq. (32): - lr * lambda * theta
            torch._foreach_add_(params, c, alpha=-lr)  # eq. (32): - lr * sign(c)
            torch._foreach_lerp_(m, grads, 1 - beta2)  # eq. (33): beta2*m + (1-beta2)*g
        return loss


def build(ctx: BuildContext, cfg: LionConfig):
    return Lion(ctx.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


SPEC = MethodSpec(
    name="lion",
    description="Lion: sign of an interpolated momentum (Chen et al. 2023), decoupled weight decay",
    regularisation=DECOUPLED,
    hparams=LionConfig.hparams(),
    build=build,
    config=LionConfig,
)
