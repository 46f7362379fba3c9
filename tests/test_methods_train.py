"""Every method, with its default hyperparameters, lowers a convex loss and trains LeNet-5 on mnist-mini."""

import pytest
import torch
from torch import nn

from curvbench import methods
from curvbench.recipe import loading as recipe
from curvbench.recipe.loading import MethodEntry
from curvbench.tasks.base import ClassificationTask, Split
from curvbench.training import engine
from curvbench.training.runner import load_task

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


# adaptive K-FAC starts at the paper's damping, 150: its first hundred steps are cautious, and mnist-mini has 80
# steps an epoch (0.8555 after two, 0.9335 after three; on full MNIST it passes 0.985 within one or two)
EPOCHS = {"kfac-adaptive": 3}


@pytest.mark.slow  # seven methods trained for 2 epochs: the maths is checked by the fast tests
@pytest.mark.parametrize("name", ALL)
def test_method_trains_lenet5_on_mnist_mini_to_90_percent_in_2_epochs(name, mini_task):
    entry = MethodEntry(name, name, methods.get(name).defaults())
    result = engine.train(mini_task, entry, training(EPOCHS.get(name, 2), 100), 0, torch.device("cpu"))
    acc = result.epochs[-1].metrics["test_accuracy"]
    assert acc >= 0.90, f"{name}: {acc:.4f}"


def test_muon_updates_conv_kernels_through_their_2d_stand_ins():
    from curvbench.methods.base import BuildContext
    from curvbench.methods.muon import split_params
    from curvbench.models.lenet import LeNet5

    torch.manual_seed(0)
    model = LeNet5()
    hidden, rest = split_params(model)
    assert [p.shape for p in hidden] == [model.c1.weight.shape, model.c3.weight.shape, model.c5.weight.shape,
                                         model.f6.weight.shape]
    assert {id(model.out.weight), id(model.c1.bias)} <= {id(p) for p in rest}
    spec = methods.get("muon")
    opt = spec.build(BuildContext(model, None, 1, 1, 0), spec.configure(spec.defaults()))
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

    from curvbench.cli.app import app

    out = CliRunner().invoke(app, ["methods"], terminal_width=200).output
    for name, spec in methods.registry().items():
        assert name in out
        for h in spec.hparams:
            assert h.name in out
    assert "coupled" in out and "decoupled" in out
    lines = out.splitlines()
    for spec in methods.registry().values():  # each hyperparameter shown with its default, under its method
        head = next(i for i, line in enumerate(lines) if line.startswith(f"{spec.name}:"))
        block = lines[head + 1 : head + 1 + len(spec.hparams)]
        for h, line in zip(spec.hparams, block):
            assert line.strip().startswith(f"{h.name} = {h.default!r}:"), line
    assert "    momentum = 0.0:" in out  # sgd, as the thesis runs it


def _muon_by_hand(model, batches, hp):
    """torch's Muon and AdamW driven directly: each kernel as its own 2-D tensor, gradients fresh every step."""
    from curvbench.methods.muon import split_params

    hidden, rest = split_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    shapes = {n: p.shape for n, p in model.named_parameters()}
    flat = {names[id(p)]: p.detach().reshape(p.shape[0], -1).clone().requires_grad_(True) for p in hidden}
    others = {names[id(p)]: p.detach().clone().requires_grad_(True) for p in rest}
    muon = torch.optim.Muon(list(flat.values()), lr=hp["lr"], weight_decay=hp["weight_decay"],
                            momentum=hp["momentum"], nesterov=hp["nesterov"], ns_steps=hp["ns_steps"])
    adamw = torch.optim.AdamW(list(others.values()), lr=hp["adamw_lr"], betas=(hp["adamw_beta1"], hp["adamw_beta2"]),
                              weight_decay=hp["weight_decay"])
    for x, y in batches:
        params = {n: t.view(shapes[n]) for n, t in flat.items()} | others
        loss = nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        muon.zero_grad()
        adamw.zero_grad()
        loss.backward()
        muon.step()
        adamw.step()
    return {n: t.view(shapes[n]).detach() for n, t in flat.items()} | {n: t.detach() for n, t in others.items()}


def _newton_schulz_float64(grad, ns_coefficients, ns_steps, eps):
    """torch's quintic Newton-Schulz iteration, in float64 rather than bfloat16."""
    a, b, c = ns_coefficients
    x = grad.double()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if grad.size(0) > grad.size(1) else x).to(grad.dtype)


@pytest.mark.parametrize("channels_last", [False, True])
def test_muon_over_several_steps_matches_torch_muon_driven_by_hand(channels_last, monkeypatch):
    """Four steps: a kernel's gradient must be this step's alone (not summed over past steps), and a
    channels_last network (how the CIFAR task prepares ResNet-18 on CUDA) builds and steps the same.

    channels_last convolutions round differently (1e-8), which Muon's bfloat16 Newton-Schulz would turn into
    bf16-sized differences: both sides orthogonalise in float64 here, so they must agree to float precision."""
    import torch.optim._muon

    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", _newton_schulz_float64)
    from helpers import TinyTask

    from curvbench.methods.base import BuildContext
    from curvbench.models.lenet import LeNet5
    from curvbench.tasks.base import Batch

    hp = {**methods.get("muon").defaults(), "adamw_beta2": 0.98}
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(4)]
    torch.manual_seed(0)
    model = LeNet5()
    expected = _muon_by_hand(_copy(model), batches, hp)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        assert not model.c3.weight.is_contiguous()
    opt = methods.get("muon").build(BuildContext(model, None, 1, 1, 0), methods.get("muon").configure(hp))
    params = list(model.parameters())
    for x, y in batches:
        opt.step(engine.make_closure(model, TinyTask(), opt, Batch(x, y), params, 0.0))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=0, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    if channels_last:
        assert model.c3.weight.is_contiguous(memory_format=torch.channels_last)


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_each_method_states_its_defaults_once_in_its_config_dataclass():
    """The spec (what recipes and `curvbench methods` read) is derived from the config dataclass, and the optimizer
    classes take their constructor defaults from it: no second copy to drift (Lion's lr once was 1e-4 in one
    place and 1e-3 in another)."""
    import dataclasses
    import inspect

    from curvbench.methods.base import MethodConfig
    from curvbench.methods.kfac import KFAC, KFACConfig
    from curvbench.methods.lion import Lion, LionConfig
    from curvbench.schema import Invalid

    for name, spec in methods.registry().items():
        module = __import__(f"curvbench.methods.{name.replace('-', '_')}", fromlist=["x"])
        configs = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, MethodConfig)
                   and c is not MethodConfig and dataclasses.is_dataclass(c)]
        assert configs, name
        declared = {f.name: f.default for c in configs for f in dataclasses.fields(c)}
        assert spec.defaults() == {k: declared[k] for k in spec.defaults()}, name
    lion = inspect.signature(Lion).parameters
    assert lion["lr"].default == LionConfig.lr and lion["betas"].default == (LionConfig.beta1, LionConfig.beta2)
    from curvbench.methods.kfac_adaptive import AdaptiveKFAC, AdaptiveKFACConfig

    for cls, config in ((KFAC, KFACConfig), (AdaptiveKFAC, AdaptiveKFACConfig)):
        signature = inspect.signature(cls).parameters
        assert any(f.name in signature for f in dataclasses.fields(config))
        for f in dataclasses.fields(config):
            if f.name in signature:
                assert signature[f.name].default == f.default, (cls.__name__, f.name)
    with pytest.raises(Invalid, match="expected a number >= 0 and < 1") as e:
        KFACConfig(momentum=1.5)
    assert e.value.path == "momentum"


@pytest.mark.parametrize("make, field", [
    (lambda m: __import__("curvbench.methods.kfac", fromlist=["KFAC"]).KFAC(m, None, factor_every=0), "factor_every"),
    (lambda m: __import__("curvbench.methods.kfac", fromlist=["KFAC"]).KFAC(m, None, momentum=1.0), "momentum"),
    (lambda m: __import__("curvbench.methods.lion", fromlist=["Lion"]).Lion(m.parameters(), lr=0.0), "lr"),
    (lambda m: __import__("curvbench.methods.lion", fromlist=["Lion"]).Lion(m.parameters(), betas=(0.9, 1.5)), "beta2"),
])
def test_an_optimizer_built_from_python_checks_its_arguments_and_names_the_bad_one(make, field):
    with pytest.raises(ValueError, match=rf"\b{field}: expected"):
        make(torch.nn.Linear(3, 2))


def test_build_is_given_the_methods_frozen_config_and_shampoo_lists_lr_and_l2_first():
    from curvbench.methods.kfac import KFACConfig
    from curvbench.methods.shampoo import ShampooHParams

    spec = methods.get("kfac")
    cfg = spec.configure(spec.resolve({"factor_every": 5}))
    assert isinstance(cfg, KFACConfig) and cfg.factor_every == 5 and cfg.inverse_every == 100
    shampoo = methods.get("shampoo")
    assert [h.name for h in shampoo.hparams][:2] == ["lr", "weight_decay"]
    assert {h.name for h in shampoo.hparams} == {f.name for f in __import__("dataclasses").fields(ShampooHParams)}


def test_a_tag_the_optimizer_sets_while_training_reaches_the_run(monkeypatch):
    """Shampoo's count of roots it could not compute is known only during training: the run's tags include it."""
    import curvbench.methods.shampoo as shampoo_mod

    def no_convergence(*a, **k):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(shampoo_mod.torch.linalg, "eigh", no_convergence)
    task = logistic_task()
    entry = MethodEntry("shampoo", "shampoo", methods.get("shampoo").defaults())
    result = engine.train(task, entry, training(2, 25), 0, torch.device("cpu"))
    assert result.status == "FINISHED" and "shampoo_config" in result.tags
    assert "root computations kept the previous root" in result.tags["shampoo_roots_kept"]
