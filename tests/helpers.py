"""Tiny problems the method tests share."""

import torch
import torch.nn.functional as F

from curvbench.tasks.base import Batch, ClassificationTask
from curvbench.training import engine


class TinyTask:
    """Just the loss and the Fisher loss of a classification task, for hand-built models and batches."""

    loss = staticmethod(lambda outputs, batch: F.cross_entropy(outputs, batch.targets))
    forward = staticmethod(lambda model, batch: model(batch.inputs))

    def fisher_loss(self, outputs, batch, generator, empirical):
        return ClassificationTask.fisher_loss(self, outputs, batch, generator, empirical)


def one_step(model, opt, batch, l2: float = 0.0):
    """One engine step (the closure the engine builds) of `opt` on `batch`."""
    params = [p for p in model.parameters()]
    return opt.step(engine.make_closure(model, TinyTask(), opt, batch, params, l2))


def batch(n: int, features, classes: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) + (tuple(features) if isinstance(features, (tuple, list)) else (features,))
    return Batch(torch.randn(shape, generator=g), torch.randint(0, classes, (n,), generator=g))
