"""The registry of tasks (dataset + model + metric) a recipe can name. Loaders import torch lazily."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from curvbench.schema import Boolean, Number


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    models: tuple[str, ...]  # the first is the default
    metrics: tuple[str, ...]  # the first is the default target metric
    loader: str  # "module:function" taking (TaskConfig, device) and returning a Task
    options: dict = field(default_factory=dict)  # recipe field task.options: name -> (check, default)
    has_val: bool = False  # the dataset has its own validation split

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
        TaskSpec(
            "cifar10",
            "CIFAR-10 (50k/10k), ResNet-18 (CIFAR variant), crop+flip augmentation on the device",
            ("resnet18",),
            ("accuracy",),
            "curvbench.tasks.cifar:load_cifar10",
            options={
                "augment": (Boolean(), True),
                "channels_last": (Boolean(), True),  # CUDA only
                "bf16": (Boolean(), True),  # bf16 autocast, CUDA only
            },
        ),
        TaskSpec(
            "conll2003",
            "CoNLL-2003 English NER, bidirectional LSTMP tagger; token accuracy and entity F1 over real tokens",
            ("lstm-tagger",),
            ("accuracy", "f1"),
            "curvbench.tasks.conll:load_conll",
            options={
                "embed": (Number(integer=True, ge=1), 100),
                "hidden": (Number(integer=True, ge=1), 128),
                "proj": (Number(integer=True, ge=1), 64),
                "bidirectional": (Boolean(), True),
                "min_freq": (Number(integer=True, ge=1), 2),
                "lowercase": (Boolean(), False),
            },
            has_val=True,
        ),
    )
}
