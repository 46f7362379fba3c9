"""The registry of tasks (dataset + model + metric) a recipe can name. Loaders import torch lazily."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    models: tuple[str, ...]  # the first is the default
    metrics: tuple[str, ...]  # the first is the default target metric
    loader: str  # "module:function" taking (TaskConfig, device) and returning a Task

    def load(self, config, device):
        module, func = self.loader.split(":")
        return getattr(importlib.import_module(module), func)(config, device)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "mnist",
            "MNIST handwritten digits (60k/10k), LeNet-5",
            ("lenet5",),
            ("accuracy",),
            "curvbench.tasks.mnist:load_mnist",
        ),
        TaskSpec(
            "fashion-mnist",
            "Fashion-MNIST clothing images (60k/10k), LeNet-5",
            ("lenet5",),
            ("accuracy",),
            "curvbench.tasks.mnist:load_fashion_mnist",
        ),
        TaskSpec(
            "mnist-mini",
            "the 10,000 real MNIST test digits shipped with curvbench, split 8,000/2,000, LeNet-5 (offline)",
            ("lenet5",),
            ("accuracy",),
            "curvbench.tasks.mnist:load_mnist_mini",
        ),
    )
}
