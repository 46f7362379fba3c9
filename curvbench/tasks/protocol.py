"""The task protocol: what the engine, the methods and the commands need from a loaded task, in one place.

A task is loaded by a loader `(config: curvbench.recipe.TaskConfig, device: torch.device) -> task`, named by a
registered TaskSpec (built-in or entry point) or by a recipe (`task: {loader: "my_pkg.tasks:make_task"}`). The
config carries the recipe's `model`, `metric`, `data_dir` and `options`. The task holds its data on `device`.

The worked example is MNIST (curvbench/tasks/mnist.py, on top of ClassificationTask in tasks/base.py):

    def load_mnist(config, device):
        train, test = <read the idx files from config.data_dir>          # images (N,1,28,28), labels (N,)
        return MnistTask("mnist", "lenet5", config.metric,
                         Split(train.x.to(device), train.y.to(device)), Split(test.x..., test.y...), 10)

    class MnistTask(ClassificationTask):
        def build_model(self, needs=frozenset()):
            return LeNet5()                                              # a plain nn.Module

ClassificationTask supplies everything below for tensors of inputs and integer labels; a task of another kind
(sequences, masks) implements the members itself, as tasks/conll.py does. The members, all required unless marked:

    splits: dict[str, Sized]
        "train" and "test", and "val" when the dataset has its own; len() of each is its number of examples.
    hold_out(fraction: float, seed: int = 0) -> None
        Move a seeded fraction of "train" into "val" (the recipe's training.validation); 0 does nothing.
    steps_per_epoch(batch_size: int) -> int
    train_batches(batch_size: int, generator: torch.Generator) -> Iterator[Batch]
        One epoch in an order drawn from `generator` (the run's seed), augmented if the task augments.
    build_model(needs: frozenset[str] = frozenset()) -> torch.nn.Module
        A fresh model; parameters are initialised from torch's global seed, which the engine sets per run.
        `needs` is passed only for a method whose MethodSpec.model_needs says how it needs the model built:
        "per_step_layers" (K-FAC) asks a recurrent model for its unrolled form (tasks/conll.py); a task that
        cannot build it may ignore it (the method then treats the recurrent layers as it treats any module).
    forward(model, batch: Batch) -> Tensor
        The model's outputs for a batch (logits).
    loss(outputs, batch: Batch) -> Tensor
        The scalar training loss (mean over the batch), without L2: the engine adds the recipe's.
    evaluate(model, split: str) -> dict[str, float]
        "loss" and every metric the task reports ("accuracy", "f1", ...), over the whole split, without
        gradients. The recipe's task.metric must be one of them; the engine logs each as <split>_<name>.
    fisher_loss(outputs, batch, generator, empirical: bool) -> (Tensor, int)        needed by K-FAC
        The summed negative log-likelihood of labels sampled from the model's predictive distribution
        (empirical: the true labels) and the number of samples: its gradient gives the Fisher's factors.
    prepare_model(model) -> model                                                 optional
        Called once after build_model (e.g. channels_last on CUDA).
    metrics: tuple[str, ...]                                                      optional
        The metrics evaluate() reports; when present the recipe's metric is checked against it before training.

Batch (tasks/base.py) holds `inputs`, `targets` and an optional `mask` (True where a target is real)."""

from __future__ import annotations

from curvbench.errors import CurvbenchError

REQUIRED = ("hold_out", "steps_per_epoch", "train_batches", "build_model", "forward", "loss", "evaluate")

# what each member is for, in the messages that refuse a task lacking it
PURPOSE = {
    "fisher_loss": "fisher_loss(outputs, batch, generator, empirical), the loss whose sampled-label gradients "
                   "give the Fisher's Kronecker factors",
}


def check(task, config, method_specs) -> None:
    """Refuse, before any training, a task lacking a member the engine or one of the recipe's methods needs."""
    where = f"task {config.dataset!r}" + (f" (loader {config.loader})" if getattr(config, "loader", None) else "")
    missing = [m for m in REQUIRED if not callable(getattr(task, m, None))]
    if not isinstance(getattr(task, "splits", None), dict) or "train" not in task.splits:
        missing.insert(0, "splits (a dict with 'train')")
    if missing:
        raise CurvbenchError(f"{where} lacks {', '.join(missing)}; the task protocol is in "
                             f"curvbench/tasks/protocol.py")
    for spec in method_specs:
        for need in spec.needs:
            if not callable(getattr(task, need, None)):
                raise CurvbenchError(f"{where} lacks {PURPOSE.get(need, need)}, which method {spec.name} needs; "
                                     f"add it to the task or leave {spec.name} out of the recipe")
    reported = getattr(task, "metrics", None)
    if reported is not None and config.metric not in reported:
        raise CurvbenchError(f"{where} reports {', '.join(reported)}, not the recipe's task.metric "
                             f"{config.metric!r}")
