"""Every method, with its default hyperparameters, lowers a convex loss and trains LeNet-5 on mnist-mini."""

import pytest
import torch
from torch import nn

from curvbench import engine, methods, recipe
from curvbench.recipe import MethodEntry
from curvbench.runner import load_task
from curvbench.tasks.base import ClassificationTask, Split

ALL = list(methods.registry())


class LogisticRegression(ClassificationTask):
    def build_model(self, method=None):
        return nn.Linear(8, 3)


def logistic_task():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 2
    y = torch.randint(0, 3, (600,), generator=g)
    x = centers[y] + torch.randn(600, 8, generator=g)
    return LogisticRegression("logreg", "linear", "accuracy", Split(x[:500], y[:500]), Split(x[500:], y[500:]), 3)


def training(epochs, batch_size=50):
    return recipe.Training(epochs, batch_size, [0], recipe.Schedule("constant"), 0.0, ["test"], "cpu", None, None, 10)


@pytest.mark.parametrize("name", ALL)
def test_method_lowers_a_convex_loss(name):
    task = logistic_task()
    torch.manual_seed(0)
    initial = task.evaluate(task.build_model(), "train")["loss"]
    entry = MethodEntry(name, name, methods.get(name).defaults())
    result = engine.train(task, entry, training(8, 25), 0, torch.device("cpu"))
    final = task.evaluate(result.model, "train")["loss"]
    assert result.status == "FINISHED"
    assert final < 0.5 * initial, (initial, final)


@pytest.fixture(scope="module")
def mini_task():
    r = recipe.parse({"task": "mnist-mini", "methods": ["sgd"]}, "test")
    return load_task(r, torch.device("cpu"))


@pytest.mark.parametrize("name", ALL)
def test_method_trains_lenet5_on_mnist_mini_to_90_percent_in_2_epochs(name, mini_task):
    entry = MethodEntry(name, name, methods.get(name).defaults())
    result = engine.train(mini_task, entry, training(2, 100), 0, torch.device("cpu"))
    acc = result.epochs[-1].metrics["test_accuracy"]
    assert acc >= 0.90, f"{name}: {acc:.4f}"


def test_muon_updates_conv_kernels_through_their_2d_stand_ins():
    from curvbench.methods.base import BuildContext
    from curvbench.models.lenet import LeNet5
    from curvbench.methods.muon import split_params

    torch.manual_seed(0)
    model = LeNet5()
    hidden, rest = split_params(model)
    assert [p.shape for p in hidden] == [model.c1.weight.shape, model.c3.weight.shape, model.c5.weight.shape,
                                         model.f6.weight.shape]
    assert {id(model.out.weight), id(model.c1.bias)} <= {id(p) for p in rest}
    opt = methods.get("muon").build(BuildContext(model, None, 1, 1, 0), methods.get("muon").defaults())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    for n, p in model.named_parameters():
        assert not torch.equal(p.detach(), before[n]), n
    # the Muon update of a kernel is orthogonalised: as a matrix its singular values are all about equal
    delta = (before["c3.weight"] - model.c3.weight.detach()).reshape(16, -1)
    s = torch.linalg.svdvals(delta)
    s = s[s > 1e-4 * s.max()]  # directions with no gradient at all (a dead channel) stay at 0
    assert len(s) >= 12 and (s.max() / s.min()) < 3


def test_unknown_hyperparameter_lists_accepted(write_recipe):
    from curvbench.errors import CurvbenchError

    path = write_recipe("task: mnist-mini\nmethods: {kfac: {dampng: 0.1}}\n")
    with pytest.raises(CurvbenchError, match="methods.kfac.dampng: unknown hyperparameter 'dampng' for kfac; accepted: lr, weight_decay, momentum, damping"):
        recipe.load(str(path))


def test_methods_command_lists_every_method_and_its_defaults():
    from typer.testing import CliRunner

    from curvbench.cli import app

    out = CliRunner().invoke(app, ["methods"], terminal_width=200).output
    for name, spec in methods.registry().items():
        assert name in out
        for h in spec.hparams:
            assert h.name in out
    assert "coupled" in out and "decoupled" in out
