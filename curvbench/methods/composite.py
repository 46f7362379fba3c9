"""Several torch optimizers over disjoint parameter sets, driven as one (one closure call per step)."""

from __future__ import annotations

import torch


class Composite:
    """Exposes the union of the parts' param_groups so the engine's schedule scales every group's lr."""

    def __init__(self, parts: list[torch.optim.Optimizer], before_step=None):
        self.parts = [p for p in parts if p is not None]
        self.before_step = before_step  # called after the closure, before the parts step
        self.state = {}

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        if self.before_step is not None:
            self.before_step()
        for part in self.parts:
            part.step()
        return loss

    def state_dict(self) -> dict:
        return {"parts": [p.state_dict() for p in self.parts]}
