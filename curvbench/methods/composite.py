"""Several torch optimizers over disjoint parameter sets, driven as one (one closure call per step)."""

from __future__ import annotations

import torch


class Composite:
    """Exposes the union of the parts' param_groups so the engine's schedule scales every group's lr."""

    def __init__(self, parts: list[torch.optim.Optimizer], before_step=None, after_step=None, also_zero=()):
        self.parts = [p for p in parts if p is not None]
        self.before_step = before_step  # called after the closure, before the parts step
        self.after_step = after_step  # called after the parts step
        self.also_zero = list(also_zero)  # parameters no part holds whose gradients zero_grad clears too
        self.state = {}

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)
        for p in self.also_zero:
            p.grad = None

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        if self.before_step is not None:
            self.before_step()
        for part in self.parts:
            part.step()
        if self.after_step is not None:
            self.after_step()
        return loss

    def state_dict(self) -> dict:
        return {"parts": [p.state_dict() for p in self.parts]}
