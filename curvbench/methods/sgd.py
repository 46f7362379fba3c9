"""SGD from torch.optim, with heavy-ball or Nesterov momentum. L2 is coupled (added by the engine)."""

from __future__ import annotations

from dataclasses import dataclass

from curvbench.methods.base import COUPLED, BuildContext, MethodConfig, MethodSpec, hp, lr_field, weight_decay_field
from curvbench.schema import Boolean, Invalid, Number


@dataclass(frozen=True)
class SGDConfig(MethodConfig):
    lr: float = lr_field(0.1)
    weight_decay: float = weight_decay_field(0.0, "L2 lambda: loss + lambda*||theta||^2")
    momentum: float = hp(0.0, Number(ge=0, lt=1), "momentum coefficient (0 = plain SGD, as the thesis)")
    nesterov: bool = hp(False, Boolean(), "Nesterov momentum (needs momentum > 0)")


def build(ctx: BuildContext, cfg: SGDConfig):
    import torch

    return torch.optim.SGD(
        ctx.model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        foreach=True,
    )


def validate(values: dict) -> None:
    if values["nesterov"] and not values["momentum"] > 0:
        raise Invalid("nesterov: true needs momentum > 0 (with momentum 0 it would run plain SGD)", "nesterov")


SPEC = MethodSpec(
    name="sgd",
    description="stochastic gradient descent (torch.optim.SGD), optional heavy-ball or Nesterov momentum",
    regularisation=COUPLED,
    hparams=SGDConfig.hparams(),
    build=build,
    config=SGDConfig,
    validate=validate,
)
