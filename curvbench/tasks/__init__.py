"""The registry of tasks (dataset + model + metric) a recipe can name: the built-ins, those that installed packages
register through the `curvbench.tasks` entry point group (plugins.py), and a recipe's own loader
(`task: {loader: "my_pkg.tasks:make_task"}`). What a loaded task must provide is in tasks/protocol.py.
Loaders import torch lazily."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from curvbench import plugins
from curvbench.schema import AutoBoolean, Boolean, Number


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    models: tuple[str, ...]  # the first is the default; empty: the loader builds its own and takes any name
    metrics: tuple[str, ...]  # the first is the default target metric; empty: "accuracy", or any the task reports
    loader: str  # "module:function" taking (TaskConfig, device) and returning a task (tasks/protocol.py)
    options: dict | None = field(default_factory=dict)  # task.options: name -> (check, default); None: unchecked
    has_val: bool = False  # the dataset has its own validation split
    source: str = "built-in"  # built-in, the entry point, or the recipe's loader path
    version: str | None = None  # the installed version of the package that provides it (plugins, loaders)

    def load(self, config, device):
        from curvbench.errors import CurvbenchError
        from curvbench.imports import failure, import_object

        loader = import_object(self.loader, f"task loader {self.loader!r}")
        if self.loader.startswith("curvbench."):  # curvbench's own: its errors are its own, a bug stays a bug
            return loader(config, device)
        try:
            return loader(config, device)
        except CurvbenchError:
            raise
        except (Exception, SystemExit) as e:  # a plugin's loader that fails, has another signature or exits
            raise CurvbenchError(f"task loader {self.loader!r} failed: {failure(e)}") from None


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
                # auto: channels_last on every device (faster on CUDA and on the CPU, same numbers)
                "channels_last": (AutoBoolean(), "auto"),
                # auto: bf16 autocast of the model on CUDA and on a CPU with bf16 instructions (AVX-512 BF16, AMX),
                # off on a CPU without them; true there is refused. Losses, K-FAC statistics float32
                "bf16": (AutoBoolean(), "auto"),
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


_REGISTRY = plugins.Registry(plugins.TASKS, TaskSpec, lambda: dict(TASKS))
registry = _REGISTRY.all  # every task known by name: built-ins first, then entry points
broken_plugins = _REGISTRY.broken
why_missing = _REGISTRY.why_missing
reset = _REGISTRY.reset


def from_loader(path: str) -> TaskSpec:
    """The spec of a recipe's own task loader: a TaskSpec, or a function (TaskConfig, device) -> task."""
    from curvbench.imports import import_object, package_version

    obj = import_object(path, f"task loader {path!r}")
    module, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    if isinstance(obj, TaskSpec):
        return dataclasses.replace(obj, source=path, version=package_version(module))
    if not callable(obj):
        from curvbench.errors import CurvbenchError

        raise CurvbenchError(f"task loader {path!r}: expected a function (TaskConfig, device) -> task or a "
                             f"curvbench.tasks.TaskSpec, got {type(obj).__name__}")
    doc = (obj.__doc__ or "").strip().splitlines()
    return TaskSpec(path, doc[0] if doc else f"loaded by {path}", (), (), f"{module}:{name}", options=None,
                    source=path, version=package_version(module))


def spec_of(config) -> TaskSpec:
    """The spec a recipe's TaskConfig names: by its loader when it has one, else by its dataset name."""
    if getattr(config, "loader", None):
        return from_loader(config.loader)
    return registry()[config.dataset]
