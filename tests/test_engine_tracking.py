"""The engine end to end on MNIST-layout files, tracked into a temporary MLflow store read back through MLflow."""

import pytest
import torch
from mlflow.tracking import MlflowClient

from curvbench.recipe import loading as recipe
from curvbench.tracking.client import Tracker
from curvbench.training import engine
from curvbench.training.progress import QuietReporter
from curvbench.training.runner import Interrupted, load_task, run_recipe

RECIPE = """
task: {{dataset: mnist, data_dir: "{data}", download: false}}
training: {{epochs: 2, batch_size: 50, seeds: [0], validation: 0.1, schedule: cosine, log_every: 2, device: cpu}}
methods:
  sgd: {{lr: 0.1, weight_decay: 1.0e-4}}
"""


@pytest.fixture
def mnist_recipe(mnist_dir, write_recipe):
    return write_recipe(RECIPE.format(data=mnist_dir))


def test_engine_logs_every_epoch_params_tags_and_status(mnist_recipe, tracking_uri, capsys):
    r = recipe.load(str(mnist_recipe))
    tracker = Tracker(tracking_uri)
    [outcome] = run_recipe(r, tracker, QuietReporter())
    assert outcome.status == "FINISHED"
    client = MlflowClient(tracking_uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sgd weight_decay=0.0001 s0"  # the entry, what it sets away from the defaults, the seed
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "mnist" and exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # one value per run for the UI's columns: best and final of every evaluated metric
    test_curve = [m.value for m in client.get_metric_history(run.info.run_id, "test_accuracy")]
    assert run.data.metrics["best_test_accuracy"] == max(test_curve)
    assert run.data.metrics["final_test_accuracy"] == test_curve[-1]
    loss_curve = [m.value for m in client.get_metric_history(run.info.run_id, "test_loss")]
    assert run.data.metrics["best_test_loss"] == min(loss_curve)
    p, t = run.data.params, run.data.tags
    assert p["training.epochs"] == "2" and p["methods.sgd.lr"] == "0.1" and p["methods.sgd.weight_decay"] == "0.0001"
    assert p["training.schedule.kind"] == "cosine" and p["task.dataset"] == "mnist"
    for key in ("task", "method", "seed", "recipe_hash", "curvbench_version", "torch_version", "device", "threads"):
        assert key in t, key
    assert (t["task"], t["method"], t["seed"], t["device"]) == ("mnist", "sgd", "0", "cpu")
    assert t["recipe_hash"] == r.digest()
    for key in ("train_loss", "test_loss", "test_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds", "train_seconds"):
        history = client.get_metric_history(outcome.run_id, key)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2], key
    # the logged numbers are the engine's numbers
    acc = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "test_accuracy")}
    assert acc == {e.epoch: e.metrics["test_accuracy"] for e in outcome.epochs}
    lr = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "lr")}
    assert lr[1] == pytest.approx(0.1) and lr[2] == pytest.approx(0.05)  # eq. (34) with J = 2
    secs = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "train_seconds")}
    ep = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "epoch_seconds")}
    assert secs[2] == pytest.approx(ep[1] + ep[2])
    # the synthetic digits are learnable: the pipeline really trains
    assert outcome.epochs[-1].metrics["test_accuracy"] > 0.3  # chance is 0.1
    text = client.download_artifacts(outcome.run_id, "recipe.yaml")
    again = recipe.load(text)
    assert again.training.seeds == [0] and [m.name for m in again.methods] == ["sgd"]


def test_same_recipe_and_seed_give_identical_metrics(mnist_recipe):
    r = recipe.load(str(mnist_recipe))
    a = run_recipe(r, None, QuietReporter())[0]
    b = run_recipe(r, None, QuietReporter())[0]
    assert [e.metrics["test_loss"] for e in a.epochs] == [e.metrics["test_loss"] for e in b.epochs]
    assert [e.metrics["train_loss"] for e in a.epochs] == [e.metrics["train_loss"] for e in b.epochs]
    r2 = recipe.load(str(mnist_recipe), recipe.Overrides({"training.seeds": [1]}))
    c = run_recipe(r2, None, QuietReporter())[0]
    assert [e.metrics["train_loss"] for e in a.epochs] != [e.metrics["train_loss"] for e in c.epochs]


def test_diverging_run_is_recorded_and_the_next_run_goes_on(mnist_dir, write_recipe, tracking_uri):
    path = write_recipe(
        RECIPE.format(data=mnist_dir)
        + "  boom: {method: sgd, lr: 1.0e+6}\n"
        + "  fine: {method: sgd, lr: 0.05}\n"
    )
    r = recipe.load(str(path), recipe.Overrides(methods=["boom", "fine"]))
    outcomes = run_recipe(r, Tracker(tracking_uri), QuietReporter())
    assert [o.status for o in outcomes] == ["DIVERGED", "FINISHED"]
    client = MlflowClient(tracking_uri)
    run = client.get_run(outcomes[0].run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["outcome"] == "diverged" and "diverged" in run.data.tags["status_reason"]
    assert client.get_run(outcomes[1].run_id).info.status == "FINISHED"


def test_ctrl_c_kills_the_run_and_keeps_what_was_logged(mnist_recipe, tracking_uri):
    class Interrupting(QuietReporter):
        def epoch_end(self, record):
            super().epoch_end(record)
            if record.epoch == 1:
                raise KeyboardInterrupt

    r = recipe.load(str(mnist_recipe))
    with pytest.raises(Interrupted) as info:
        run_recipe(r, Tracker(tracking_uri), Interrupting())
    [outcome] = info.value.outcomes
    assert outcome.status == "KILLED" and len(outcome.epochs) == 1
    client = MlflowClient(tracking_uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(outcome.run_id, "test_accuracy")] == [1]


def test_coupled_l2_adds_two_lambda_theta_to_the_gradient(mnist_recipe):
    """One SGD step with weight_decay lambda equals a step on loss + lambda*||theta||^2 computed by autograd."""
    r = recipe.load(str(mnist_recipe))
    task = load_task(r, torch.device("cpu"))
    entry = r.methods[0]
    entry.hparams["weight_decay"] = 0.01
    torch.manual_seed(0)
    model = task.build_model()
    reference = task.build_model()
    reference.load_state_dict(model.state_dict())
    batch = next(task.eval_batches("train", 32))
    opt, l2 = engine.build_optimizer(task, model, entry, 10, 1, 0)
    params = list(model.parameters())
    opt.step(engine.make_closure(model, task, opt, batch, params, l2))
    loss = task.loss(reference(batch.inputs), batch) + 0.01 * sum((p**2).sum() for p in reference.parameters())
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    for p, q, g in zip(model.parameters(), reference.parameters(), grads):
        torch.testing.assert_close(p.detach(), q.detach() - 0.1 * g, rtol=1e-5, atol=1e-6)


def test_missing_dataset_says_where_it_looked(tmp_path, write_recipe):
    from curvbench.errors import DatasetMissing

    path = write_recipe(f'task: {{dataset: fashion-mnist, data_dir: "{tmp_path}/none", download: false}}\nmethods: [sgd]\n')
    with pytest.raises(DatasetMissing) as info:
        load_task(recipe.load(str(path)), torch.device("cpu"))
    msg = str(info.value)
    assert "\n" not in msg and f"{tmp_path}/none/FashionMNIST/raw" in msg and "--data-dir" in msg


def test_a_run_killed_inside_its_first_epoch_logs_the_steps_and_seconds_it_did(mnist_recipe, tracking_uri):
    class Interrupting(QuietReporter):
        def progress(self, step, epoch, loss):
            super().progress(step, epoch, loss)
            if step >= 3:
                raise KeyboardInterrupt

    r = recipe.load(str(mnist_recipe), recipe.Overrides({"training.log_every": 1}))
    with pytest.raises(Interrupted) as info:
        run_recipe(r, Tracker(tracking_uri), Interrupting())
    [outcome] = info.value.outcomes
    assert outcome.epochs == [] and outcome.steps >= 3
    client = MlflowClient(tracking_uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "killed"
    [steps] = client.get_metric_history(outcome.run_id, "steps")
    [seconds] = client.get_metric_history(outcome.run_id, "train_seconds")
    assert steps.step == seconds.step == 1  # the epoch it was in
    assert steps.value == outcome.steps and seconds.value == pytest.approx(outcome.train_seconds) and seconds.value > 0


@pytest.mark.slow
def test_a_run_records_what_its_timing_depended_on_and_a_busy_machine_is_said_once_and_marked(
        mnist_recipe, tracking_uri, monkeypatch, capsys, tmp_path):
    from curvbench.report.collect import collect
    from curvbench.report.summary import summarise
    from curvbench.report.tables import markdown_table
    from curvbench.training import machine

    r = recipe.load(str(mnist_recipe))
    [quiet] = run_recipe(r, Tracker(tracking_uri), QuietReporter())
    client = MlflowClient(tracking_uri)
    tags = client.get_run(quiet.run_id).data.tags
    assert tags["cpu_model"] == machine.cpu_model() and int(tags["cpus"]) >= 1
    assert {"load_before", "load_after", "others_cpu_before", "others_cpu_after"} <= set(tags)
    assert tags["timing"] in ("quiet", "busy")
    capsys.readouterr()  # this machine may really be busy: only the runs below are counted
    monkeypatch.setattr(machine, "others_cpu_share", lambda window=0.1: 7.5)  # seven cores' worth of other work
    monkeypatch.setattr(machine, "_warned", False)
    two = recipe.load(str(mnist_recipe), recipe.Overrides({"training.seeds": [1, 2], "experiment": "busy"}))
    busy = run_recipe(two, Tracker(tracking_uri), QuietReporter())
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: the machine is busy")]
    assert len(warnings) == 1 and "7.50" in warnings[0]  # once per command, not per run
    assert all(client.get_run(o.run_id).data.tags["timing"] == "busy" for o in busy)
    rows = summarise(collect(client, experiment="busy"))
    assert "(busy: 2/2)" in markdown_table(rows)


def test_busy_means_other_processes_want_the_cores_the_threads_need():
    from curvbench.training.machine import busy

    assert not busy(0.2, threads=2, cpus=2) and busy(0.8, threads=2, cpus=2)
    assert not busy(1.2, threads=1, cpus=2) and busy(1.8, threads=1, cpus=2)
    assert not busy(None, threads=2, cpus=2)


def test_other_processes_cpu_share_sees_a_spinning_process():
    import subprocess
    import sys

    from curvbench.training.machine import others_cpu_share

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert others_cpu_share(window=0.5) >= 0.6
    finally:
        spinner.kill()


@pytest.mark.slow
def test_a_relative_sqlite_store_is_the_file_of_the_directory_it_is_opened_in(tmp_path, monkeypatch):
    """One process opening `sqlite:///store.db` in two directories writes two files: neither the tracking store
    nor the study storage goes on using the first directory's database (pooled connections, MLflow's store
    cache)."""
    from curvbench.search import studies

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        monkeypatch.chdir(tmp_path / sub)
        tracker = Tracker("sqlite:///track.db")
        names = {e.name for e in tracker.client.search_experiments()}
        assert f"exp-{sub}" not in names and ("exp-a" not in names)
        tracker.experiment_id(f"exp-{sub}")
        storage = studies.open_storage("sqlite:///queue.db")
        assert [s.study_name for s in storage.get_all_studies()] == []
        storage.create_new_study([], f"study-{sub}")
    assert {e.name for e in MlflowClient(f"sqlite:///{tmp_path}/a/track.db").search_experiments()} >= {"exp-a"}
    assert "exp-b" in {e.name for e in MlflowClient(f"sqlite:///{tmp_path}/b/track.db").search_experiments()}
