"""Any importable torch optimizer as a recipe entry: checked against its constructor before training, its L2
treatment chosen per entry, closures and train/eval modes handled, its source and version logged."""

import pytest
import torch
from conftest import new_store
from helpers import TinyTask, batch
from torch import nn

from curvbench.errors import CurvbenchError
from curvbench.methods import get
from curvbench.recipe import loading as recipe
from curvbench.training import engine


class PlainStep(torch.optim.Optimizer):
    """An optimizer whose step() takes no closure: p <- p - lr * grad."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-g["lr"])


class Modes(PlainStep):
    """Records its train/eval switches, and checks that every step happens in train mode."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, lr)
        self.mode, self.calls = "eval", []  # as Schedule-Free: eval mode until train()

    def train(self):
        self.mode = "train"
        self.calls.append("train")

    def eval(self):
        self.mode = "eval"
        self.calls.append("eval")

    def step(self):
        assert self.mode == "train"
        super().step()


def parse(methods: dict):
    return recipe.parse({"task": "mnist-mini", "methods": methods, "training": {"epochs": 1, "device": "cpu"}}, "r.yaml")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def through_engine(methods: dict, batches):
    """A fresh mlp() stepped on `batches` by the recipe entry's optimizer, with the closure the engine builds."""
    model = mlp()
    [entry] = parse(methods).methods
    opt, l2 = engine.build_optimizer(TinyTask(), model, entry, 10, 1, 0)
    for b in batches:
        opt.step(engine.make_closure(model, TinyTask(), opt, b, list(model.parameters()), l2))
    return model


def test_bad_entries_are_refused_before_training_naming_the_field():
    with pytest.raises(CurvbenchError, match=r"methods\.radam\.lrr: unknown hyperparameter 'lrr' for torch\.optim\.RAdam"):
        parse({"radam": {"method": "torch.optim.RAdam", "lrr": 0.1}})
    with pytest.raises(CurvbenchError, match=r"methods\.x\.method: method 'nopkg_zz\.Opt': cannot import nopkg_zz"):
        parse({"x": {"method": "nopkg_zz.Opt"}})
    with pytest.raises(CurvbenchError, match=r"methods\.x\.method: .*is not a torch\.optim\.Optimizer subclass"):
        parse({"x": {"method": "collections.OrderedDict"}})
    with pytest.raises(CurvbenchError, match=r"methods\.x\.regularisation: decoupled needs a weight_decay argument"):
        parse({"x": {"method": "test_external_methods:PlainStep", "regularisation": "decoupled"}})


def test_regularisation_coupled_decoupled_or_none():
    for reg, class_decay, engine_l2 in (("decoupled", 0.01, 0.0), ("coupled", 0.0, 0.01), ("none", 0.0, 0.0)):
        [entry] = parse({"adam": {"method": "torch.optim.Adam", "weight_decay": 0.01, "regularisation": reg}}).methods
        opt, l2 = engine.build_optimizer(TinyTask(), mlp(), entry, 10, 1, 0)
        assert (opt.param_groups[0]["weight_decay"], l2) == (class_decay, engine_l2), reg
    assert get("torch.optim.Adam").defaults()["regularisation"] == "decoupled"  # it takes weight_decay itself
    assert get("test_external_methods:PlainStep").defaults()["regularisation"] == "coupled"


def test_a_closure_optimizer_gets_the_engines_closure_over_several_steps():
    """L-BFGS evaluates the closure many times a step: three steps through the engine equal three by hand."""
    batches = [batch(16, 4, 3, seed=s) for s in range(3)]
    ref = mlp()
    by_hand = torch.optim.LBFGS(ref.parameters(), lr=0.5, max_iter=5)
    for b in batches:
        def closure(b=b):
            by_hand.zero_grad()
            loss = nn.functional.cross_entropy(ref(b.inputs), b.targets)
            loss.backward()
            return loss
        by_hand.step(closure)
    model = through_engine({"lbfgs": {"method": "torch.optim.LBFGS", "lr": 0.5, "max_iter": 5}}, batches)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


def test_a_step_without_closure_gets_fresh_gradients_every_step():
    batches = [batch(16, 4, 3, seed=s) for s in range(3)]
    ref = mlp()
    for b in batches:
        ref.zero_grad()
        nn.functional.cross_entropy(ref(b.inputs), b.targets).backward()
        with torch.no_grad():
            for p in ref.parameters():
                p -= 0.05 * p.grad
    model = through_engine({"plain": {"method": "test_external_methods:PlainStep", "lr": 0.05}}, batches)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.slow
def test_train_eval_optimizers_evaluate_in_eval_mode_and_train_in_train_mode():
    from curvbench.training.runner import load_task

    r = parse({"m": {"method": "test_external_methods:Modes", "lr": 0.05}})
    task = load_task(r, torch.device("cpu"))
    result = engine.train(task, r.methods[0], r.training, 0, torch.device("cpu"))
    assert result.status == engine.FINISHED  # every step asserted train mode, after each evaluation switched back
    assert result.tags == {"method_class": "test_external_methods.Modes", "method_version": "unknown"}
    model = task.build_model()  # and one evaluation, watched
    opt = get("test_external_methods:Modes").build(
        engine.BuildContext(model, task, 1, 1, 0), r.methods[0].hparams)
    engine.evaluate(task, model, ["test"], opt)
    assert opt.calls == ["eval", "train"] and opt.mode == "train"


def test_an_imported_class_trains_and_its_source_and_version_are_logged(tmp_path):
    from mlflow.tracking import MlflowClient

    from curvbench.tracking.client import Tracker
    from curvbench.training.progress import QuietReporter
    from curvbench.training.runner import run_recipe

    uri = new_store(tmp_path / "m.db")
    r = parse({"radam": {"method": "torch.optim.RAdam", "lr": 0.003}})
    [outcome] = run_recipe(r, Tracker(uri), QuietReporter())
    assert outcome.status == "FINISHED"
    assert outcome.epochs[-1].metrics["test_accuracy"] > 0.5
    params = MlflowClient(uri).get_run(outcome.run_id).data.params
    from importlib import metadata

    assert params["method_class"] == "torch.optim.radam.RAdam" and params["method_version"] == metadata.version("torch")
    assert params["methods.radam.method"] == "torch.optim.RAdam"


def test_a_missing_peer_package_names_the_extra_and_other_entries_still_run(write_recipe):
    from typer.testing import CliRunner

    from curvbench.cli.app import app

    text = ("extra: peers\ntask: mnist-mini\nmethods:\n  sgd: {lr: 0.1}\n"
            "  soap: {method: no_such_package.SOAP, lr: 0.003}\nsearch: {soap: {lr: [0.1, 0.01]}}\n")
    path = write_recipe(text)
    with pytest.raises(CurvbenchError) as e:
        recipe.load(str(path))
    assert str(e.value).startswith(f"{path}: methods.soap.method: method 'no_such_package.SOAP': cannot import "
                                   "no_such_package")
    assert str(e.value).endswith("this recipe needs the extra: pip install 'curvbench[peers]'")
    chosen = recipe.load(str(path), recipe.Overrides(methods=["sgd"]))  # the entry that needs nothing
    assert [m.name for m in chosen.methods] == ["sgd"] and chosen.search == {}
    listing = CliRunner().invoke(app, ["methods", str(path)])  # the listing of a recipe that would not run
    assert listing.exit_code == 2
    [line] = [x for x in listing.output.splitlines() if x.strip()]
    assert line.startswith("error: ") and "methods.soap: method 'no_such_package.SOAP': cannot import no_such_package" in line


def test_tuple_defaults_read_as_yaml_lists_and_reach_the_class_as_tuples():
    r = parse({"adam": {"method": "torch.optim.Adam", "betas": [0.8, 0.9]}, "adam2": {"method": "torch.optim.Adam"}})
    assert r.methods[1].hparams["betas"] == [0.9, 0.999]  # the class's (0.9, 0.999), as YAML writes it
    model = mlp()
    opt, _ = engine.build_optimizer(TinyTask(), model, r.methods[0], 10, 10, 0)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)


@pytest.mark.slow
def test_tune_searches_an_imported_classs_keyword_arguments(tmp_path):
    from optuna.trial import TrialState

    from curvbench.search.tune import tune
    from curvbench.tracking.client import Tracker
    from curvbench.training.progress import QuietReporter

    r = recipe.parse({"task": "mnist-mini", "training": {"epochs": 1, "validation": 0.1, "device": "cpu"},
                      "methods": {"adam": {"method": "torch.optim.Adam"}},
                      "search": {"adam": {"lr": [0.01, 0.001], "amsgrad": [True, False]}}}, "r.yaml")
    [res] = tune(r, Tracker(new_store(tmp_path / "m.db")), QuietReporter(), storage=f"sqlite:///{tmp_path}/o.db")
    done = [t for t in res.trials if t.state == TrialState.COMPLETE]
    assert sorted((t.params["lr"], t.params["amsgrad"]) for t in done) == [
        (0.001, False), (0.001, True), (0.01, False), (0.01, True)]
    assert res.best_params["lr"] in (0.01, 0.001) and res.best_value > 0.5
