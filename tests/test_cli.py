"""The command line itself: exit codes, one-line errors, no traceback, instant --help."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from curvbench.cli.app import app

runner = CliRunner()


def test_help_does_not_import_torch_or_mlflow():
    code = "import sys; from curvbench.cli.app import app; assert 'torch' not in sys.modules and 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_runs_and_reports(mnist_dir, write_recipe, tracking_uri):
    path = write_recipe(f'task: {{dataset: mnist, data_dir: "{mnist_dir}"}}\nmethods: [sgd]\n')
    result = runner.invoke(
        app, ["train", str(path), "--epochs", "1", "--seed", "3", "--device", "cpu", "--tracking-uri", tracking_uri]
    )
    assert result.exit_code == 0, result.output
    # not a terminal: a line per run and epoch (on stderr), the run counted k of N
    assert "[sgd s3 (run 1 of 1)] start" in result.output
    assert "[sgd s3] epoch 1:" in result.output and "finished" in result.output
    quiet = runner.invoke(app, ["train", str(path), "--epochs", "1", "--seed", "3", "--device", "cpu", "--quiet",
                                "--tracking-uri", tracking_uri])
    assert quiet.exit_code == 0 and "epoch 1:" not in quiet.output and "curvbench summary" in quiet.output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert len(runs) == 2  # the quiet run is tracked all the same
    assert all(r.data.params["training.epochs"] == "1" and r.data.tags["seed"] == "3" for r in runs)


def test_bad_recipe_exits_2_with_one_line(write_recipe):
    path = write_recipe("task: mnist-mini\nmethods: {sgd: {lr: fast}}\n")
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert lines == [f'error: {path}: methods.sgd.lr: expected a number > 0, got "fast"']


def test_unknown_method_flag_exits_2(write_recipe):
    path = write_recipe("task: mnist-mini\nmethods: [sgd]\n")
    result = runner.invoke(app, ["train", str(path), "--methods", "sgd,nope"])
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output and "Traceback" not in result.output


def test_diverged_run_exits_nonzero_and_names_it(mnist_dir, write_recipe, tracking_uri):
    path = write_recipe(f'task: {{dataset: mnist, data_dir: "{mnist_dir}"}}\nmethods: {{sgd: {{lr: 1.0e+7}}}}\n')
    result = runner.invoke(app, ["train", str(path), "--epochs", "1", "--quiet", "--tracking-uri", tracking_uri])
    assert result.exit_code == 1
    assert "error: sgd lr=1e+07 s0 diverged: loss nan" in result.output
    assert "diverged: diverged" not in result.output and "diverged (diverged" not in result.output


def test_missing_data_is_one_line(tmp_path, write_recipe, tracking_uri):
    path = write_recipe(f'task: {{dataset: mnist, data_dir: "{tmp_path}/empty"}}\nmethods: [sgd]\n')
    result = runner.invoke(app, ["train", str(path), "--no-download", "--tracking-uri", tracking_uri])
    assert result.exit_code == 2
    assert result.output.startswith("error: mnist: train-images-idx3-ubyte[.gz]")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_sigterm_ends_the_run_as_killed_and_keeps_its_epochs(mnist_dir, write_recipe, tracking_uri):
    import os
    import signal
    import time

    from mlflow.tracking import MlflowClient

    path = write_recipe(f'task: {{dataset: mnist, data_dir: "{mnist_dir}"}}\nmethods: [sgd]\n')
    proc = subprocess.Popen([sys.executable, "-m", "curvbench", "train", str(path), "--epochs", "500",
                             "--tracking-uri", tracking_uri, "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline().decode()
        lines.append(line)
        if "epoch 2:" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, "".join(lines) + out
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert run.info.status == "KILLED"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 2


def test_recipe_names_resolve_from_any_folder_and_a_local_recipe_wins(tmp_path, monkeypatch):
    """The recipes ship with the package: `mnist` works outside the repository; ./recipes/NAME.yaml wins."""
    from curvbench.recipe.loading import find_recipe, load

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CURVBENCH_RECIPES", raising=False)
    shipped = find_recipe("mnist")
    assert shipped.is_file() and load("mnist").task.dataset == "mnist"
    assert shipped.resolve() != (tmp_path / "recipes" / "mnist.yaml").resolve()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mnist.yaml").write_text("task: mnist-mini\nmethods: [sgd]\n")
    assert find_recipe("mnist").resolve() == (tmp_path / "recipes" / "mnist.yaml").resolve()
    assert load("mnist").task.dataset == "mnist-mini"
    with pytest.raises(Exception, match=r"recipe 'nope' not found in recipes, .*known recipes: .*quickstart"):
        find_recipe("nope")


def test_help_names_flags_by_what_they_take_and_gives_an_example():
    for command in ("train", "tune", "to-target", "report", "methods", "tasks", "ui"):
        out = runner.invoke(app, [command, "--help"], terminal_width=100).output
        assert "<" not in out and "list[" not in out, (command, out)  # no Python type names
        assert f"Example: curvbench {command}" in out, command
    out = runner.invoke(app, ["tune", "--help"], terminal_width=100).output
    assert "--seeds N" in out and "--storage URL" in out and "--space ENTRY.HP=V1,V2" in out


def test_a_log_gets_a_line_every_few_minutes_inside_a_long_epoch_with_the_pace_and_time_left():
    import io

    from curvbench.training.progress import LineReporter

    now, out = [0.0], io.StringIO()
    rep = LineReporter(out, every_seconds=300, clock=lambda: now[0])
    rep.run_started("cifar10 sgd s0", total_steps=1000, steps_per_epoch=500, epochs=2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "start: 2 epochs x 500 steps" in lines[0]
    for step in range(10, 401, 10):  # a report every 10 steps of 2 s: 20 s apart
        now[0] += 20.0
        rep.progress(step, 1, loss=2.0 - step / 1000)
    progress = out.getvalue().splitlines()[1:]
    # 800 s of steps: a line at 300 s and at 600 s, none in between and none before the first 300 s
    assert len(progress) == 2, progress
    assert progress[0] == ("[cifar10 sgd s0] step 150/1000 (epoch 1), loss 1.8500, 2.00 s/step, "
                           "left 0:28:20 (epoch 0:11:40)")
    assert "step 300/1000" in progress[1] and "left 0:23:20 (epoch 0:06:40)" in progress[1]
    # a resumed run's pace counts only the steps taken since the checkpoint
    now[0] += 1000.0
    rep.run_resumed(500)
    now[0] += 300.0
    rep.progress(600, 2, loss=1.0)
    assert out.getvalue().splitlines()[-1].endswith("step 600/1000 (epoch 2), loss 1.0000, 3.00 s/step, left 0:20:00 "
                                                    "(epoch 0:20:00)")


def test_time_left_comes_from_the_runs_own_pace_from_the_first_reports_on_even_for_slow_steps():
    from curvbench.training.progress import TimeLeft, clock_text, short_label

    now = [0.0]
    t = TimeLeft(clock=lambda: now[0])
    t.run_started(total_steps=1500, steps_per_epoch=500)  # ResNet-18 on a CPU: 1.5 to 2.5 s a step
    assert t.run_left() is None and clock_text(t.run_left()) == "-:--:--"
    rng = __import__("random").Random(0)
    for step in range(1, 51):
        now[0] += rng.uniform(1.5, 2.5)
        t.at(step)
    true_rate = 2.0
    assert t.run_left() == pytest.approx(true_rate * 1450, rel=0.2)  # within 20% after 50 steps
    assert t.epoch_left() == pytest.approx(true_rate * 450, rel=0.2)
    # the overall estimate: this run's remainder plus two more runs of this run's estimated length
    assert t.overall_left(runs_not_started=2) == pytest.approx(t.run_left() + 2 * t.seconds_per_step() * 1500)
    now[0] += 100.0
    t.run_ended()
    t.run_started(total_steps=1500, steps_per_epoch=500)
    now[0] += 20.0
    t.at(10)
    assert t.overall_left(runs_not_started=1) == pytest.approx(2.0 * 1490 + (now[0] - 20.0 - 0.0))
    # a run resumed from a checkpoint at step 1000: the pace counts the steps taken since, not the 1000 restored
    t = TimeLeft(clock=lambda: now[0])
    t.run_started(total_steps=1500, steps_per_epoch=500)
    now[0] += 5.0  # loading the checkpoint, replaying its epochs
    t.resumed(1000)
    resumed_at = now[0]
    assert t.run_left() is None
    for step in range(1001, 1051):
        now[0] += rng.uniform(1.5, 2.5)
        t.at(step)
    assert t.run_left() == pytest.approx(true_rate * 450, rel=0.2)
    assert t.epoch_left() == pytest.approx(true_rate * 450, rel=0.2)
    t.at(1500)
    now[0] += 2.0 * 450
    t.run_ended()  # 500 steps here, counted as the 1500-step run they belong to
    assert t.runs_done_seconds[-1] == pytest.approx(3 * (now[0] - resumed_at))
    assert clock_text(3725.4) == "1:02:05"
    assert short_label("kfac lr=0.01 momentum=0 s2 to test_accuracy 0.985 (run 3 of 25)").endswith("…")
    assert len(short_label("x" * 100)) == 22


@pytest.mark.parametrize("debug", ["", "1"])
def test_runs_kept_unlogged_make_a_finished_command_exit_3_with_or_without_debug(monkeypatch, capsys, debug):
    import typer

    from curvbench.cli import app as cli

    monkeypatch.setenv("CURVBENCH_DEBUG", debug)
    monkeypatch.setattr(cli, "_settle_tracking", lambda: 2)  # two runs' writes kept in mlruns/unlogged/
    with pytest.raises(typer.Exit) as e:
        cli.friendly(lambda: "done")()
    assert e.value.exit_code == 3
    assert capsys.readouterr().err.startswith("error: 2 run(s) did not reach the tracking store")
    monkeypatch.setattr(cli, "_settle_tracking", lambda: 0)
    assert cli.friendly(lambda: "done")() == "done"
