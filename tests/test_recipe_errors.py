"""Malformed recipes: each gives one line naming the file, the field and what was expected."""

import pytest

from curvbench.errors import CurvbenchError
from curvbench.recipe import loading as recipe

GOOD = """
task: mnist-mini
training: {epochs: 2, batch_size: 100}
methods:
  sgd: {lr: 0.1}
"""

CASES = [
    # (recipe text, expected message fragment)
    ("task: mnist-mini\nmethods:\n  sgd: {lr: fast}\n", 'methods.sgd.lr: expected a number > 0, got "fast"'),
    ("task: mnist-mini\nmethods:\n  sgd: {lr: -1}\n", "methods.sgd.lr: expected a number > 0, got -1"),
    ("task: mnist-mini\nmethods:\n  sgd: {lrr: 0.1}\n", "methods.sgd.lrr: unknown hyperparameter 'lrr' for sgd; accepted: lr, weight_decay"),
    ("task: mnist-mini\nmethods:\n  adamx: {}\n", 'methods.adamx: unknown method "adamx"; known methods: sgd, sam, lion, kfac, kfac-adaptive, shampoo, adamw, muon'),
    ("task: imagenet\nmethods: {sgd: {}}\n", 'task.dataset: unknown task "imagenet"; known tasks: mnist, fashion-mnist, mnist-mini'),
    ("task: mnist-mini\ntraining: {epochs: 0}\nmethods: {sgd: {}}\n", "training.epochs: expected an integer >= 1 and <= 1000000, got 0"),
    ("task: mnist-mini\ntraining: {epochs: 2.5}\nmethods: {sgd: {}}\n", "training.epochs: expected an integer >= 1 and <= 1000000, got 2.5"),
    ("task: mnist-mini\ntraining: {epoch: 2}\nmethods: {sgd: {}}\n", 'training.epoch: unknown key "epoch"; expected one of: epochs'),
    ("task: mnist-mini\ntraining: {schedule: linear}\nmethods: {sgd: {}}\n", 'training.schedule: expected one of constant, cosine, cosine-step, got "linear"'),
    ("task: mnist-mini\ntraining: {seeds: [0, x]}\nmethods: {sgd: {}}\n", 'training.seeds[1]: expected an integer >= 0 and <= 4294967295, got "x"'),
    ("task: mnist-mini\ntraining: {validation: 1.5}\nmethods: {sgd: {}}\n", "training.validation: expected a number >= 0 and < 1, got 1.5"),
    ("task: mnist-mini\nmethods: {sgd: {momentum: yes please}}\n", 'methods.sgd.momentum: expected a number >= 0 and < 1, got "yes please"'),
    ("task: mnist-mini\nmethods: {sgd: {nesterov: 1}}\n", "methods.sgd.nesterov: expected true or false, got 1"),
    ("methods: {sgd: {}}\n", "task: missing; expected a task name or a mapping with a dataset"),
    ("task: mnist-mini\n", "methods: missing; expected a mapping of method names to hyperparameters"),
    ("task: mnist-mini\nmethods: {sgd: {}}\nextras: 1\n", 'extras: unknown key "extras"; expected one of: name, description'),
    ("task: mnist-mini\nmethods: {sgd: {}}\nmethods: {sgd: {}}\n", "line 3, column 1: YAML syntax error: duplicate key \"methods\" (first on line 2)"),
    ("task: mnist-mini\nmethods: {sgd: {lr: 0.1}\n", "line 3, column 1: YAML syntax error"),
    ("- just\n- a list\n", "expected a mapping with task and methods at the top, got a list"),
    ("", "the recipe is empty"),
    ("task: {dataset: mnist-mini, model: resnet18}\nmethods: {sgd: {}}\n", 'task.model: expected one of lenet5, got "resnet18"'),
    ("task: mnist-mini\ntraining: {validation: 0, eval_splits: [val]}\nmethods: {sgd: {}}\n", 'training.eval_splits: lists "val"'),
    ("task: mnist-mini\nmethods: {sgd: {}}\nsearch: {sgd: {lr: {low: 1, high: 0.1}}}\n", "search.sgd.lr: expected low < high"),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_malformed_recipe_gives_one_line_naming_file_and_field(write_recipe, text, expected):
    path = write_recipe(text)
    with pytest.raises(CurvbenchError) as info:
        recipe.load(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_missing_file_names_it(tmp_path):
    with pytest.raises(CurvbenchError, match=r"nope\.yaml: recipe file not found"):
        recipe.load(str(tmp_path / "nope.yaml"))


def test_unknown_recipe_name_lists_known(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CurvbenchError, match="recipe 'theirs' not found .*known recipes: .*mine"):
        recipe.load("theirs")
    assert recipe.load("mine").name == "mine"


def test_override_errors_blame_the_command_line(write_recipe):
    path = write_recipe(GOOD)
    with pytest.raises(CurvbenchError, match="^command line: training.epochs: expected an integer >= 1 and <= 1000000, got -3$"):
        recipe.load(str(path), recipe.Overrides({"training.epochs": -3}))


def test_unknown_method_flag_lists_known(write_recipe):
    path = write_recipe(GOOD)
    with pytest.raises(CurvbenchError, match="--methods: unknown method 'nope'; known: sgd"):
        recipe.load(str(path), recipe.Overrides(methods=["nope"]))


def test_resolved_recipe_fills_defaults_and_round_trips(write_recipe):
    import yaml

    r = recipe.load(str(write_recipe(GOOD)), recipe.Overrides({"training.epochs": 3, "task.data_dir": "/d"}))
    d = r.to_dict()
    assert d["training"]["epochs"] == 3 and d["task"] == {
        "dataset": "mnist-mini", "model": "lenet5", "metric": "accuracy", "data_dir": "/d", "download": True, "options": {}
    }
    assert d["methods"]["sgd"] == {"lr": 0.1, "weight_decay": 0.0, "momentum": 0.0, "nesterov": False}
    again = recipe.parse(yaml.safe_load(r.to_yaml()), "again.yaml")
    assert again.to_dict() == d and again.digest() == r.digest()


def test_yaml_scientific_notation_strings_are_numbers(write_recipe):
    r = recipe.load(str(write_recipe("task: mnist-mini\nmethods: {sgd: {lr: 1e-3}}\n")))
    assert r.methods[0].hparams["lr"] == pytest.approx(1e-3)


def test_setting_one_hyperparameter_keeps_the_other_methods(write_recipe):
    path = write_recipe("task: mnist-mini\nmethods: [sgd, lion]\n")
    r = recipe.load(str(path), recipe.Overrides({"methods.sgd.lr": 0.05, "task.data_dir": "/d"}))
    assert [m.name for m in r.methods] == ["sgd", "lion"]
    assert r.entry("sgd").hparams["lr"] == 0.05 and r.task.dataset == "mnist-mini" and r.task.data_dir == "/d"


def test_the_search_grammar_is_the_same_from_a_recipe_and_from_the_command_line():
    from curvbench.recipe.space import check_search, grid_points, parse_space_flags

    flags = parse_space_flags(["sgd.lr=0.1,0.03", "sgd.weight_decay=0,1e-4", "lion.lr=1e-5:1e-3:log"])
    assert flags == {"sgd": {"lr": [0.1, 0.03], "weight_decay": [0, 1e-4]},
                     "lion": {"lr": {"low": 1e-5, "high": 1e-3, "log": True}}}
    checked = check_search(flags, {"sgd": "sgd", "lion": "lion"})
    assert grid_points(checked["sgd"]) == [{"lr": 0.1, "weight_decay": 0.0}, {"lr": 0.1, "weight_decay": 1e-4},
                                           {"lr": 0.03, "weight_decay": 0.0}, {"lr": 0.03, "weight_decay": 1e-4}]
    with pytest.raises(CurvbenchError, match="grid sampler needs a list"):
        grid_points(checked["lion"])
    from curvbench.schema import Invalid

    with pytest.raises(Invalid, match="expected a number > 0, got -1") as e:
        check_search(parse_space_flags(["lion.lr=-1:1"]), {"lion": "lion"})
    assert e.value.path == "lion.lr"


def test_a_task_named_on_the_command_line_takes_the_other_task_flags_too(write_recipe):
    path = write_recipe(GOOD)
    r = recipe.load(str(path), recipe.Overrides({"task": "mnist", "task.data_dir": "/data"}))
    assert r.task.dataset == "mnist" and r.task.data_dir == "/data"
