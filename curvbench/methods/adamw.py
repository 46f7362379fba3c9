"""AdamW from torch.optim (Loshchilov & Hutter 2019): decoupled weight decay."""

from __future__ import annotations

from dataclasses import dataclass

from curvbench.methods.base import DECOUPLED, BuildContext, MethodConfig, MethodSpec, hp, lr_field, weight_decay_field
from curvbench.schema import Number


@dataclass(frozen=True)
class AdamWConfig(MethodConfig):
    lr: float = lr_field(1e-3)
    weight_decay: float = weight_decay_field(0.01, "decoupled weight decay: theta <- theta - lr*lambda*theta")
    beta1: float = hp(0.9, Number(ge=0, lt=1), "first-moment decay")
    beta2: float = hp(0.999, Number(ge=0, lt=1), "second-moment decay")
    eps: float = hp(1e-8, Number(gt=0), "denominator epsilon")


def build(ctx: BuildContext, cfg: AdamWConfig):
    import torch

    return torch.optim.AdamW(
        ctx.model.parameters(),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        foreach=True,
    )


SPEC = MethodSpec(
    name="adamw",
    description="Adam with decoupled weight decay (torch.optim.AdamW)",
    regularisation=DECOUPLED,
    hparams=AdamWConfig.hparams(),
    build=build,
    config=AdamWConfig,
)
