"""AdamW from torch.optim (Loshchilov & Hutter 2019): decoupled weight decay."""

from __future__ import annotations

from curvbench.methods.base import DECOUPLED, BuildContext, HParam, MethodSpec, lr_param, weight_decay_param
from curvbench.schema import Number


def build(ctx: BuildContext, hp: dict):
    import torch

    return torch.optim.AdamW(
        ctx.model.parameters(),
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        eps=hp["eps"],
        weight_decay=hp["weight_decay"],
        foreach=True,
    )


SPEC = MethodSpec(
    name="adamw",
    description="Adam with decoupled weight decay (torch.optim.AdamW)",
    regularisation=DECOUPLED,
    hparams=(
        lr_param(1e-3),
        weight_decay_param(0.01, "decoupled weight decay: theta <- theta - lr*lambda*theta"),
        HParam("beta1", 0.9, Number(ge=0, lt=1), "first-moment decay"),
        HParam("beta2", 0.999, Number(ge=0, lt=1), "second-moment decay"),
        HParam("eps", 1e-8, Number(gt=0), "denominator epsilon"),
    ),
    build=build,
)
