"""SGD from torch.optim, with heavy-ball or Nesterov momentum. L2 is coupled (added by the engine)."""

from __future__ import annotations

from curvbench.methods.base import COUPLED, BuildContext, HParam, MethodSpec, lr_param, weight_decay_param
from curvbench.schema import Boolean, Invalid, Number


def build(ctx: BuildContext, hp: dict):
    import torch

    return torch.optim.SGD(
        ctx.model.parameters(),
        lr=hp["lr"],
        momentum=hp["momentum"],
        nesterov=hp["nesterov"],
        foreach=True,
    )


def validate(hp: dict) -> None:
    if hp["nesterov"] and not hp["momentum"] > 0:
        raise Invalid("nesterov: true needs momentum > 0 (with momentum 0 it would run plain SGD)", "nesterov")


SPEC = MethodSpec(
    name="sgd",
    description="stochastic gradient descent (torch.optim.SGD), optional heavy-ball or Nesterov momentum",
    regularisation=COUPLED,
    hparams=(
        lr_param(0.1),
        weight_decay_param(0.0, "L2 lambda: loss + lambda*||theta||^2"),
        HParam("momentum", 0.0, Number(ge=0, lt=1), "momentum coefficient (0 = plain SGD, as the thesis)"),
        HParam("nesterov", False, Boolean(), "Nesterov momentum (needs momentum > 0)"),
    ),
    build=build,
    validate=validate,
)
