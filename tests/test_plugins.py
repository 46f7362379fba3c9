"""Methods and tasks from outside curvbench: a plugin package registered by entry points (tests/plugins), a
recipe's own task loader, and the task protocol's refusal of a task that lacks what a method needs."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from curvbench import methods, tasks
from curvbench.cli.app import app

PLUGINS = Path(__file__).parent / "plugins"
ENTRY_POINTS = """[curvbench.methods]
signsgd = curvbench_demo_plugin:SIGNSGD
broken = curvbench_demo_plugin.missing:SPEC
exits = curvbench_demo_plugin.exits:SPEC
[curvbench.tasks]
blobs = curvbench_demo_plugin:BLOBS
"""

runner = CliRunner()


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The demo plugin installed as a distribution would be: its package and a dist-info with entry points."""
    site = tmp_path / "site"
    info = site / "curvbench_demo_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: curvbench-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(PLUGINS))
    methods.reset(), tasks.reset()
    yield
    methods.reset(), tasks.reset()


def train(recipe_path, uri, *extra):
    return runner.invoke(app, ["train", str(recipe_path), "--device", "cpu", "--tracking-uri", uri, "--quiet", *extra])


def runs_of(uri, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_listing_names_each_source_and_a_broken_plugin_in_one_line(plugin):
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("sgd: ") and line.endswith("(built-in)") for line in lines)
    [signsgd] = [line for line in lines if line.startswith("signsgd: ")]
    assert "entry point curvbench-demo-plugin 0.1 (curvbench_demo_plugin:SIGNSGD)" in signsgd
    warnings = [line for line in lines if line.startswith("warning:")]
    [warning] = [w for w in warnings if "'broken'" in w]
    assert "ModuleNotFoundError" in warning and "curvbench_demo_plugin.missing" in warning
    [exits] = [w for w in warnings if "'exits'" in w]  # a plugin that calls sys.exit at import ends nothing
    assert "it called sys.exit(4)" in exits and len(warnings) == 2
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0
    assert any(line.startswith("blobs ") and "entry point curvbench-demo-plugin" in line
               for line in result.output.splitlines())


def test_a_recipe_naming_the_broken_plugin_gets_its_error(plugin, write_recipe, tracking_uri):
    path = write_recipe("task: blobs\nmethods: [broken]\n")
    result = train(path, tracking_uri)
    assert result.exit_code == 2
    assert "methods: broken" in result.output or "broken:" in result.output
    assert "not loaded: ModuleNotFoundError" in result.output and "Traceback" not in result.output


def test_a_plugin_method_and_task_train_end_to_end_and_log_their_source(plugin, write_recipe, tracking_uri):
    path = write_recipe("task: blobs\ntraining: {epochs: 3, batch_size: 50}\n"
                        "methods: {signsgd: {lr: 0.02}, kfac: {lr: 0.05}}\n")
    result = train(path, tracking_uri)
    assert result.exit_code == 0, result.output
    runs = {r.data.tags["entry"]: r for r in runs_of(tracking_uri, "blobs")}
    assert set(runs) == {"signsgd", "kfac"}
    for r in runs.values():
        assert r.info.status == "FINISHED"
        assert r.data.metrics["test_accuracy"] > 0.9  # three separated blobs: chance is 1/3
        assert r.data.params["task_source"] == "entry point curvbench-demo-plugin 0.1 (curvbench_demo_plugin:BLOBS)"
        assert r.data.params["task_version"] == "0.1"
    sign = runs["signsgd"].data.params
    assert sign["method_source"] == "entry point curvbench-demo-plugin 0.1 (curvbench_demo_plugin:SIGNSGD)"
    assert sign["method_version"] == "0.1" and sign["methods.signsgd.lr"] == "0.02"
    assert "method_source" not in runs["kfac"].data.params  # built-in


@pytest.mark.slow
def test_a_recipes_own_loader_trains_and_is_logged(write_recipe, tracking_uri, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    path = write_recipe('task: {loader: "curvbench_demo_plugin:load_blobs", options: {n: 300}}\n'
                        "training: {epochs: 2, batch_size: 50}\nmethods: {sgd: {lr: 0.2}}\n")
    result = train(path, tracking_uri)
    assert result.exit_code == 0, result.output
    [run] = runs_of(tracking_uri, "curvbench_demo_plugin:load_blobs")
    assert run.data.params["task_source"] == "curvbench_demo_plugin:load_blobs"
    assert run.data.params["task.loader"] == "curvbench_demo_plugin:load_blobs"
    assert run.data.params["task.options.n"] == "300"
    assert run.data.metrics["test_accuracy"] > 0.9


@pytest.mark.slow
def test_a_task_without_a_fisher_loss_is_refused_for_kfac_before_training(write_recipe, tracking_uri, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    text = ('task: {loader: "curvbench_demo_plugin:load_blobs_without_fisher", dataset: nofisher}\n'
            "training: {epochs: 1}\nmethods: [%s]\n")
    result = train(write_recipe(text % "sgd, kfac"), tracking_uri)
    assert result.exit_code == 2
    [line] = [x for x in result.output.splitlines() if x.strip()]
    assert line.startswith("error: task 'nofisher' (loader curvbench_demo_plugin:load_blobs_without_fisher) lacks "
                           "fisher_loss(") and "which method kfac needs" in line
    assert runs_of(tracking_uri, "nofisher") == []  # refused before the sgd run too
    result = train(write_recipe(text % "sgd", "sgd.yaml"), tracking_uri)  # sgd alone needs no Fisher loss
    assert result.exit_code == 0, result.output
    assert len(runs_of(tracking_uri, "nofisher")) == 1


@pytest.mark.parametrize("loader, expected", [
    ("no_such_pkg.tasks:make", "task.loader: task loader 'no_such_pkg.tasks:make': cannot import no_such_pkg"),
    ("curvbench_demo_plugin:nothing", "task.loader: task loader 'curvbench_demo_plugin:nothing': "
                                      "curvbench_demo_plugin has no nothing"),
    ("curvbench_demo_plugin:SIGNSGD", "task.loader: task loader 'curvbench_demo_plugin:SIGNSGD': expected a function"),
    ("curvbench_demo_plugin.exits:make", "task loader 'curvbench_demo_plugin.exits:make': importing "
                                         "curvbench_demo_plugin.exits failed: it called sys.exit(4)"),
    ("curvbench_demo_plugin.raises:make", "task loader 'curvbench_demo_plugin.raises:make': importing "
                                          "curvbench_demo_plugin.raises failed: RuntimeError: a module that fails"),
    pytest.param("curvbench_demo_plugin:load_raising", "task loader 'curvbench_demo_plugin:load_raising' failed: "
                 "RuntimeError: the blobs are out of stock", marks=pytest.mark.slow),  # these two load data first
    pytest.param("curvbench_demo_plugin:load_wrong_signature", "task loader 'curvbench_demo_plugin:load_wrong_"
                 "signature' failed: TypeError: load_wrong_signature() takes 0 positional arguments",
                 marks=pytest.mark.slow),
])
def test_bad_loaders_are_one_line_errors_naming_the_field(write_recipe, tracking_uri, monkeypatch, loader, expected):
    monkeypatch.syspath_prepend(str(PLUGINS))
    result = train(write_recipe(f'task: {{loader: "{loader}"}}\nmethods: [sgd]\n'), tracking_uri)
    assert result.exit_code == 2, result.output
    [line] = [x for x in result.output.splitlines() if x.strip()]
    assert expected in line, line
    assert runs_of(tracking_uri, loader) == [] or all(r.info.status != "RUNNING" for r in runs_of(tracking_uri, loader))


@pytest.mark.parametrize("module, expected", [
    ("curvbench_demo_plugin.raises", "importing curvbench_demo_plugin.raises failed: RuntimeError: a module that fails"),
    ("curvbench_demo_plugin.exits", "importing curvbench_demo_plugin.exits failed: it called sys.exit(4)"),
])
def test_a_method_module_that_fails_or_exits_at_import_is_one_line_exit_2(write_recipe, tracking_uri, monkeypatch,
                                                                            module, expected):
    monkeypatch.syspath_prepend(str(PLUGINS))
    result = train(write_recipe(f"task: mnist-mini\nmethods: {{x: {{method: {module}.Opt}}}}\n"), tracking_uri)
    assert result.exit_code == 2, result.output
    [line] = [x for x in result.output.splitlines() if x.strip()]
    assert line.startswith("error: ") and "methods.x.method" in line and expected in line, line
