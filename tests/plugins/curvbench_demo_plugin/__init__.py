"""A plugin package as a third party would write one: a method and a task registered through entry points.

tests/test_plugins.py puts it on the path with a dist-info whose entry_points.txt reads

    [curvbench.methods]
    signsgd = curvbench_demo_plugin:SIGNSGD
    [curvbench.tasks]
    blobs = curvbench_demo_plugin:BLOBS
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from curvbench.methods.base import COUPLED, MethodConfig, MethodSpec, lr_field
from curvbench.tasks import TaskSpec
from curvbench.tasks.base import ClassificationTask, Split


# ---- a method: sign descent, theta <- theta - lr * sign(grad)
class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
        return loss


@dataclass(frozen=True)
class SignSGDConfig(MethodConfig):
    lr: float = lr_field(0.01)


SIGNSGD = MethodSpec(
    name="signsgd",
    description="sign descent (demo plugin)",
    regularisation=COUPLED,
    hparams=SignSGDConfig.hparams(),
    build=lambda ctx, hp: SignSGD(ctx.model.parameters(), lr=hp["lr"]),
)


# ---- a task: three Gaussian blobs in the plane, a small MLP
def blob_split(n: int, seed: int, device) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    x = centres[y] + 0.6 * torch.randn(n, 2, generator=g)
    return Split(x.to(device), y.to(device))


class BlobsTask(ClassificationTask):
    def build_model(self, method=None):
        return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))


def load_blobs(config, device):
    """Three Gaussian blobs in the plane (option n: training points), a 2-16-3 MLP."""
    n = int(config.options.get("n", 600))
    return BlobsTask(config.dataset, "mlp", config.metric, blob_split(n, 0, device), blob_split(300, 1, device), 3)


BLOBS = TaskSpec("blobs", "three Gaussian blobs, a 2-16-3 MLP (demo plugin)", ("mlp",), ("accuracy",),
                 "curvbench_demo_plugin:load_blobs")


# ---- a task without the Fisher loss K-FAC samples from (a recipe names it by its loader)
class NoFisher:
    """Everything the engine needs, delegated to a BlobsTask, except fisher_loss."""

    def __init__(self, inner: BlobsTask):
        self.inner = inner
        self.splits = inner.splits
        for name in ("hold_out", "steps_per_epoch", "train_batches", "build_model", "forward", "loss", "evaluate"):
            setattr(self, name, getattr(inner, name))


def load_blobs_without_fisher(config, device):
    """Blobs, without a Fisher loss."""
    return NoFisher(load_blobs(config, device))


# ---- loaders that fail as user code does
def load_raising(config, device):
    """A loader whose own code fails."""
    raise RuntimeError("the blobs are out of stock")


def load_wrong_signature():
    """A loader that takes no arguments."""
    return None
