"""tune resumes and shares studies; to-target finds the first evaluation at the target."""

import math
import os
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from curvbench.recipe import loading as recipe
from curvbench.search.to_target import first_reaching, run_to_target
from curvbench.search.tune import best_recipe, tune
from curvbench.tracking.client import Tracker
from curvbench.training.progress import QuietReporter
from curvbench.training.runner import Interrupted

RECIPE = """
task: {{dataset: mnist, data_dir: "{data}", download: false}}
training: {{epochs: 1, batch_size: 100, validation: 0.2, device: cpu, threads: 1}}
methods:
  sgd: {{lr: 0.1}}
search:
  sgd: {{lr: [0.2, 0.1, 0.05], weight_decay: [0, 1.0e-4]}}
"""


@pytest.fixture
def tune_recipe(mnist_dir, write_recipe):
    return write_recipe(RECIPE.format(data=mnist_dir))


def completed_points(storage, name):
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    return sorted((t.params["lr"], t.params["weight_decay"]) for t in done), study


@pytest.mark.slow
def test_tune_resumes_after_an_interruption_without_rerunning(tune_recipe, tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    r = recipe.load(str(tune_recipe))

    class StopAtThird(QuietReporter):
        started = 0

        def run_started(self, *a):
            super().run_started(*a)
            StopAtThird.started += 1
            if StopAtThird.started == 3:
                raise KeyboardInterrupt

    tracker = Tracker(tracking_uri)
    with pytest.raises(Interrupted):
        tune(r, tracker, StopAtThird(), "grid", storage=storage)
    points, study = completed_points(storage, "r-sgd-grid")
    assert len(points) == 2
    first_two = {t.number for t in study.get_trials() if t.state == TrialState.COMPLETE}
    [res] = tune(r, tracker, QuietReporter(), "grid", storage=storage)
    points, study = completed_points(storage, "r-sgd-grid")
    assert points == sorted((lr, wd) for lr in (0.2, 0.1, 0.05) for wd in (0.0, 1e-4))  # each exactly once
    assert first_two <= {t.number for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert res.best_value == max(t.value for t in study.get_trials() if t.state == TrialState.COMPLETE)
    # MLflow: the parents and their children
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("mnist").experiment_id
    parent = client.get_run(res.parent_run_id)
    assert parent.data.tags["kind"] == "tune" and float(parent.data.metrics["best_score"]) == res.best_value
    # one parent for the study: the resumed search reopened the first one, which holds every trial
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(client.search_runs([exp], "tags.kind = 'tune'")) == 1
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 6 + ["KILLED"]
    assert parent.info.status == "FINISHED" and parent.data.tags["search_state"] == "complete"
    assert parent.data.tags["best.lr"] == str(res.best_params["lr"])


@pytest.mark.slow
def test_a_study_is_only_resumed_under_the_recipe_and_grid_it_was_run_with(tune_recipe, tmp_path):
    from curvbench.errors import CurvbenchError

    storage = f"sqlite:///{tmp_path}/o.db"
    r = recipe.load(str(tune_recipe))
    tune(r, None, QuietReporter(), "grid", trials=1, storage=storage)
    longer = recipe.load(str(tune_recipe), recipe.Overrides({"training.epochs": 2}))
    epochs = r.training.epochs
    with pytest.raises(CurvbenchError, match=rf"study 'r-sgd-grid' .* another recipe or search space .*objective\): "
                                             rf"it differs in training\.epochs \({epochs} then, 2 now\); pass --study"):
        tune(longer, None, QuietReporter(), "grid", trials=2, storage=storage)
    wider = recipe.parse({**r.to_dict(), "search": {"sgd": {**r.search["sgd"], "momentum": [0.0, 0.9]}}}, "wider")
    with pytest.raises(CurvbenchError, match=r"another recipe or search space.*differs in fixed\.momentum "
                                             r"\(0\.0 then, \(unset\) now\), space\.momentum "
                                             r"\(\(unset\) then, \[0\.0, 0\.9\] now\); pass"):
        tune(wider, None, QuietReporter(), "grid", trials=2, storage=storage)
    with pytest.raises(CurvbenchError, match=r"another recipe or search space.*differs in objective \(best "):
        tune(r, None, QuietReporter(), "grid", trials=2, storage=storage, objective="final")
    [res] = tune(r, None, QuietReporter(), "grid", trials=2, storage=storage)  # the same recipe resumes
    assert len(res.trials) == 2
    [res] = tune(longer, None, QuietReporter(), "grid", trials=1, storage=storage, study_name="longer")
    assert len(res.trials) == 1


@pytest.mark.slow  # a few seconds: out of the fast loop, which keeps a test of the same module
def test_best_recipe_round_trips_through_train(tune_recipe, tmp_path):
    import yaml

    r = recipe.load(str(tune_recipe))
    [res] = tune(r, None, QuietReporter(), "random", trials=2, storage=f"sqlite:///{tmp_path}/o.db")
    out = tmp_path / "best.yaml"
    out.write_text(yaml.safe_dump(best_recipe(r, [res])))
    again = recipe.load(str(out))
    assert again.methods[0].hparams["lr"] == res.best_params["lr"]
    assert again.methods[0].hparams["weight_decay"] == res.best_params["weight_decay"]
    from curvbench.training.runner import run_recipe

    [o] = run_recipe(again, None, QuietReporter())
    assert o.status == "FINISHED"


@pytest.mark.slow  # a few seconds: out of the fast loop, which keeps a test of the same module
def test_out_recipe_keeps_the_untuned_entries(tune_recipe, tmp_path, tracking_uri):
    from typer.testing import CliRunner

    from curvbench.cli.app import app

    text = tune_recipe.read_text().replace("  sgd: {lr: 0.1}\n", "  sgd: {lr: 0.1}\n  lion: {lr: 3.0e-4}\n")
    tune_recipe.write_text(text)
    out = tmp_path / "best.yaml"
    result = CliRunner().invoke(app, ["tune", str(tune_recipe), "--methods", "sgd", "--sampler", "random", "--trials",
                                      "1", "--storage", f"sqlite:///{tmp_path}/o.db", "--tracking-uri", tracking_uri,
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    best = recipe.load(str(out))
    assert [m.name for m in best.methods] == ["sgd", "lion"] and best.entry("lion").hparams["lr"] == 3e-4


@pytest.mark.slow
def test_two_processes_share_one_study_and_run_the_grid_once(tune_recipe, tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path}/shared.db"
    cmd = [sys.executable, "-m", "curvbench", "tune", str(tune_recipe), "--storage", storage,
           "--tracking-uri", tracking_uri, "--study", "shared"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    points, study = completed_points(storage, "shared")
    assert points == sorted((lr, wd) for lr in (0.2, 0.1, 0.05) for wd in (0.0, 1e-4))
    assert len(study.get_trials()) == 6  # no point queued twice: no failed duplicate beside the six
    assert all("start" in o for o in outs)  # both took part
    assert all("[tune sgd] done" in o for o in outs)  # the search's progress, line by line in a log


@pytest.mark.slow  # a few seconds: out of the fast loop, which keeps a test of the same module
def test_to_target_reports_the_first_evaluation_at_the_target(tune_recipe, tracking_uri):
    """Target 0.3 on the synthetic digits: seed 0 first gets there at step 14 (epoch 3), seed 1 at step 8
    (epoch 2), both after evaluations below it. Every assertion runs: a seed that misses fails the test."""
    r = recipe.load(str(tune_recipe), recipe.Overrides({"training.epochs": 3, "training.seeds": [0, 1]}))
    summaries, parent_id, key = run_to_target(r, Tracker(tracking_uri), QuietReporter(), target=0.3, eval_every=2)
    assert key == "val_accuracy"
    [s] = summaries
    client = MlflowClient(tracking_uri)
    assert len(s.runs) == 2 and all(run.reached for run in s.runs), [run.evaluations for run in s.runs]
    for run in s.runs:
        points = run.evaluations
        assert [p.step for p in points] == list(range(2, 2 * len(points) + 1, 2))
        hit = first_reaching(points, key, 0.3)
        assert points[-1] is hit and len(points) > 1  # training stopped at the first evaluation over the target
        assert all(p.metrics[key] < 0.3 for p in points[:-1])
        assert (run.seconds, run.steps, run.epochs) == (hit.train_seconds, hit.step, hit.step / 5)
        assert run.value == hit.metrics[key] >= 0.3
        assert 0 < run.seconds
        child = client.get_run(run.run_id)
        assert child.data.tags["mlflow.parentRunId"] == parent_id
        assert child.data.metrics["time_to_target"] == pytest.approx(run.seconds)
        # the epoch the target was reached in stopped part-way: it has steps and seconds, but no epoch time
        whole_epochs = hit.step // 5
        assert hit.step % 5 != 0
        epoch_times = client.get_metric_history(run.run_id, "epoch_seconds")
        assert sorted(m.step for m in epoch_times) == list(range(1, whole_epochs + 1))
        steps = {m.step: m.value for m in client.get_metric_history(run.run_id, "steps")}
        assert steps == {e: min(5 * e, hit.step) for e in range(1, whole_epochs + 2)}
        seconds = {m.step: m.value for m in client.get_metric_history(run.run_id, "train_seconds")}
        assert seconds[whole_epochs + 1] == pytest.approx(run.seconds)
    assert sorted(run.steps for run in s.runs) == [8, 14]


@pytest.mark.slow  # two 3-epoch queues; the resumed maths is checked fast, per method, in test_checkpoints
def test_a_queued_to_target_run_killed_mid_run_resumes_from_its_last_epoch(tune_recipe, tmp_path, tracking_uri):
    """Ctrl-C in epoch 2 of a queued 3-epoch run; the same command resumes it after epoch 1 from the checkpoint
    beside the SQLite storage, in a new run tagged resumed_at_epoch whose curve is the unstopped run's."""
    r = recipe.load(str(tune_recipe), recipe.Overrides({"training.epochs": 3}))
    client = MlflowClient(tracking_uri)

    def curve(run_id):
        return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, "val_accuracy"),
                                                   key=lambda m: m.step)]

    [straight], _, _ = run_to_target(r, Tracker(tracking_uri), QuietReporter(), target=1.0,
                                     storage=f"sqlite:///{tmp_path}/straight.db")

    class CtrlCInEpoch2(QuietReporter):
        def epoch_end(self, epoch_record):
            if epoch_record.epoch == 2:
                raise KeyboardInterrupt

    storage = f"sqlite:///{tmp_path}/queue.db"
    with pytest.raises(Interrupted):
        run_to_target(r, Tracker(tracking_uri), CtrlCInEpoch2(), target=1.0, storage=storage)
    [saved] = (tmp_path / "checkpoints").iterdir()
    [resumed], _, _ = run_to_target(r, Tracker(tracking_uri), QuietReporter(), target=1.0, storage=storage)
    [a], [b] = straight.runs, resumed.runs
    run = client.get_run(b.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_at_epoch"] == "1"
    assert len(curve(a.run_id)) == 3 and curve(b.run_id) == curve(a.run_id)
    assert [e.metrics["val_accuracy"] for e in b.evaluations] == [e.metrics["val_accuracy"] for e in a.evaluations]
    assert not saved.exists()  # the finished run's checkpoint is gone
    killed = client.search_runs([run.info.experiment_id], "attributes.status = 'KILLED'")
    assert len(killed) == 1 and "resumed_at_epoch" not in killed[0].data.tags


def test_a_to_target_queue_resumed_with_other_settings_is_refused_naming_them(tune_recipe, tmp_path):
    """A queue made on 1 thread is not resumed on 2 (their seconds would not compare): refused before any run,
    naming the field and both values; made before the settings were kept, it is refused without them."""
    from curvbench.errors import CurvbenchError

    storage = f"sqlite:///{tmp_path}/q.db"
    one = recipe.load(str(tune_recipe), recipe.Overrides({"training.threads": 1}))
    run_to_target(one, None, QuietReporter(), target=1.0, storage=storage)
    two = recipe.load(str(tune_recipe), recipe.Overrides({"training.threads": 2}))
    with pytest.raises(CurvbenchError, match=r"holds the runs of another recipe, target or evaluation interval: it "
                                             r"differs in recipe\.training\.threads \(1 then, 2 now\); pass"):
        run_to_target(two, None, QuietReporter(), target=1.0, storage=storage)
    import optuna

    [study] = optuna.get_all_study_summaries(storage)
    optuna.load_study(study_name=study.study_name, storage=storage).set_user_attr("settings", None)  # an older queue
    with pytest.raises(CurvbenchError, match=r"evaluation interval; pass another --storage or start from a new "
                                             r"recipe name$"):
        run_to_target(two, None, QuietReporter(), target=1.0, storage=storage)


def test_to_target_not_reached_is_recorded(tune_recipe, tracking_uri):
    r = recipe.load(str(tune_recipe))
    [s], parent_id, _ = run_to_target(r, Tracker(tracking_uri), QuietReporter(), target=1.0)
    [run] = s.runs
    assert not run.reached and run.seconds is None and math.isinf(s.censored("seconds").median)
    client = MlflowClient(tracking_uri)
    assert client.get_run(run.run_id).data.tags["target_reached"] == "false"
    assert client.get_run(parent_id).data.metrics["sgd.reached"] == 0


@pytest.mark.slow
def test_tune_with_seeds_scores_each_trial_by_the_median_over_its_seeds(tune_recipe, tmp_path, tracking_uri):
    from typer.testing import CliRunner

    from curvbench.cli.app import app
    from curvbench.report.collect import collect, searches

    storage = f"sqlite:///{tmp_path}/seeds.db"
    result = CliRunner().invoke(app, ["tune", str(tune_recipe), "--space", "sgd.lr=0.2,0.05", "--seeds", "3",
                                      "--storage", storage, "--tracking-uri", tracking_uri, "--quiet"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri)
    study = optuna.load_study(study_name="r-sgd-grid", storage=storage)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        runs = [client.get_run(i) for i in t.user_attrs["run_ids"]]
        assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1", "2"]
        best = sorted(max(m.value for m in client.get_metric_history(r.info.run_id, "val_accuracy")) for r in runs)
        assert t.value == pytest.approx(best[1])  # the median of three
    parent = client.get_run(client.get_run(done[0].user_attrs["run_id"]).data.tags["mlflow.parentRunId"])
    assert parent.data.params["scored_on"] == "val" and parent.data.params["seeds"] == "0,1,2"
    top = max(done, key=lambda t: t.value)
    assert f"sgd: best lr={top.params['lr']} with val_accuracy {top.value:.4f} (scored on val, median of 3 seeds); " \
           f"parent run {parent.info.run_id}" in " ".join(result.output.split())
    [found] = searches(collect(client))
    assert (found.n_trials, len(found.best_runs)) == (2, 3) and found.best_score == pytest.approx(top.value)


@pytest.mark.slow  # two tunes through the command line
def test_tune_holds_out_a_validation_split_when_the_task_has_none_and_says_so(mnist_dir, write_recipe, tmp_path,
                                                                             tracking_uri):
    from typer.testing import CliRunner

    from curvbench.cli.app import app
    from curvbench.errors import CurvbenchError

    path = write_recipe(RECIPE.format(data=mnist_dir).replace("validation: 0.2", "validation: 0"), "novalid.yaml")
    args = ["--space", "sgd.lr=0.1", "--storage", f"sqlite:///{tmp_path}/o.db", "--tracking-uri", tracking_uri, "-q"]
    result = CliRunner().invoke(app, ["tune", str(path), *args])
    assert result.exit_code == 0, result.output
    assert "note: trials are scored on val: 10% of train held out" in " ".join(result.output.split())
    assert "(scored on val)" in " ".join(result.output.split()), result.output
    assert "scored on the test split" not in result.output
    on_test = CliRunner().invoke(app, ["tune", str(path), "--on", "test", "--study", "t", *args])
    assert on_test.exit_code == 0, on_test.output
    assert "warning: trials are scored on the test split" in on_test.output
    assert "(scored on test)" in " ".join(on_test.output.split())
    with pytest.raises(CurvbenchError, match=r"--on val: trials can be scored on val"):  # from Python: as given
        tune(recipe.load(str(path)), None, QuietReporter(), "grid", on="val", storage=f"sqlite:///{tmp_path}/p.db")


@pytest.mark.slow
def test_a_worker_that_finishes_while_another_holds_a_point_says_its_result_is_partial(tune_recipe, tmp_path,
                                                                                        tracking_uri):
    """Another live worker (here a sleeping process) holds one grid point: this worker runs the other five, and
    its result, table and parent say the search is partial, naming the trial and who holds it."""
    import socket

    from curvbench import record
    from curvbench.recipe.space import grid_points
    from curvbench.search.tune import open_storage
    from curvbench.training.progress import tune_table

    storage = f"sqlite:///{tmp_path}/held.db"
    r = recipe.load(str(tune_recipe))
    study = optuna.create_study(study_name="r-sgd-grid", storage=open_storage(storage), direction="maximize")
    study.enqueue_trial(grid_points(r.search["sgd"])[0])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        held = study.ask()  # the other worker's trial, RUNNING
        held.set_user_attr(record.HOST, socket.gethostname())  # as a worker marks the trial it runs
        held.set_user_attr(record.PID, str(other.pid))
        [res] = tune(r, Tracker(tracking_uri), QuietReporter(), "grid", storage=storage)
    finally:
        other.kill()
    assert len(res.trials) == 5
    assert len(res.held) == 1 and res.held[0].startswith(f"trial {held.number} (lr=0.2, weight_decay=0.0) held by "
                                                         f"pid {other.pid}")
    assert "PARTIAL: 1 trial(s)" in tune_table(res).title
    parent = MlflowClient(tracking_uri).get_run(res.parent_run_id)
    assert parent.data.tags["search_state"].startswith("partial")


def test_a_worker_queues_and_pops_grid_points_only_under_the_study_lock(tmp_path):
    """Two workers that both find a point missing must not both queue it (one trial would end a failed duplicate):
    while another worker holds the study's lock, take() waits; once it is free, take() queues the missing points
    and pops the first, and a second take() pops the next without queueing anything twice."""
    import threading

    from curvbench.search.studies import open_storage, point_of, study_lock, take

    storage = f"sqlite:///{tmp_path}/locked.db"
    store = open_storage(storage)
    study = optuna.create_study(study_name="locked", storage=store, direction="maximize")
    points = [{"lr": 0.1}, {"lr": 0.01}]
    got = []
    with study_lock(storage):
        worker = threading.Thread(target=lambda: got.append(take(study, points, storage)))
        worker.start()
        worker.join(timeout=2)
        assert worker.is_alive() and got == [] and study.get_trials() == []  # waiting for the lock, nothing queued
    worker.join(timeout=60)
    assert not worker.is_alive()
    second = take(study, points, storage)
    assert take(study, points, storage) is None  # both points are held
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 and all(t.state == TrialState.RUNNING for t in trials)
    assert sorted(point_of(t)["lr"] for t in trials) == [0.01, 0.1]  # each point queued once
    assert {got[0].number, second.number} == {0, 1}


def test_a_point_whose_params_are_half_suggested_is_still_held(tmp_path):
    """A worker reads the study between another worker's two suggest calls: the trial has lr but not yet
    weight_decay. Its point is still held, so it is not queued again."""
    from curvbench.search.studies import open_storage, take

    storage = f"sqlite:///{tmp_path}/half.db"
    study = optuna.create_study(study_name="half", storage=open_storage(storage), direction="maximize")
    points = [{"lr": 0.1, "weight_decay": 0.0}]
    first = take(study, points, storage)
    first.suggest_categorical("lr", [0.1])  # weight_decay not suggested yet
    assert take(study, points, storage) is None
    assert len(study.get_trials()) == 1


def test_tune_progress_counts_the_trial_that_is_running(tune_recipe, tmp_path):
    shown = []

    class Watch(QuietReporter):
        def search_status(self, label, done, running, left, best):
            shown.append((done, running, left))

        def run_started(self, *args):
            shown.append("run")

    r = recipe.load(str(tune_recipe))
    tune(r, None, Watch(), "grid", trials=2, storage=f"sqlite:///{tmp_path}/o.db")
    before_runs = [shown[i - 1] for i, s in enumerate(shown) if s == "run"]
    assert before_runs == [(0, 1, 1), (1, 1, 0)]  # the running trial is counted while it trains


def test_a_study_storage_that_goes_away_ends_the_parent_and_says_so(tmp_path, monkeypatch):
    """PostgreSQL stopped mid-sweep: Optuna's commit error (whose own text speaks of max lengths) becomes one line
    saying the storage went away, with the database's reason; the parent run ends FAILED, not left RUNNING."""
    import optuna
    from sqlalchemy.exc import OperationalError

    from curvbench.errors import CurvbenchError
    from curvbench.search import study_loop

    class Parent:
        ended = None

        def end(self, status, reason=""):
            self.ended = (status, reason)

    storage = f"sqlite:///{tmp_path}/o.db"
    study = study_loop.open_study("s", storage, "minimize", optuna.samplers.RandomSampler(), "mark", "other")
    ran = []

    def take(study, points, storage, more=lambda: True):
        if ran:
            try:
                raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
            except OperationalError as e:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit") from e
        return study.ask()

    monkeypatch.setattr(study_loop.studies, "take", take)
    parent = Parent()
    with pytest.raises(CurvbenchError, match=r"study storage sqlite:///.*o\.db went away during the study "
                                             r"\(database error: server closed the connection unexpectedly\)"):
        study_loop.run_study(study, storage, None, lambda t: t.suggest_float("x", 0, 1),
                             lambda t, x: (ran.append(x), study.tell(t, x)), parent)
    assert len(ran) == 1 and parent.ended[0] == "FAILED" and "went away" in parent.ended[1]
    ran.clear()
    with pytest.raises(ZeroDivisionError):  # anything else is not the storage's: it goes on up as it is
        study_loop.run_study(study, storage, None, lambda t: 1 / 0, lambda t, x: None, Parent())


@pytest.mark.slow  # trains a run through the command line between two dry runs
def test_dry_run_lists_the_points_and_what_they_will_cost(tune_recipe, tracking_uri):
    """Trials x seeds x epochs x steps always; the time once the store holds a finished run of the same task,
    method and batch size, at that run's own seconds per step."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from curvbench.cli.app import app

    args = ["tune", str(tune_recipe), "--space", "sgd.lr=0.2,0.05", "--seeds", "2", "--dry-run",
            "--tracking-uri", tracking_uri]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    # the synthetic training digits, 20% held out (the recipe's validation): 5 steps of 100 an epoch
    assert "cost: 2 trial(s) x 2 seed(s) x 1 epoch(s) x 5 steps = 20 steps; no finished sgd run on mnist" in first.output
    train = CliRunner().invoke(app, ["train", str(tune_recipe), "--tracking-uri", tracking_uri, "-q"])
    assert train.exit_code == 0, train.output
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    per_step = run.data.metrics["train_seconds"] / run.data.metrics["steps"]
    second = CliRunner().invoke(app, args)
    assert f"= 20 steps, about {20 * per_step:.0f} s of training at {per_step * 1e3:.1f} ms a step (the median of 1 " \
           in second.output, second.output
    assert client.search_runs([run.info.experiment_id], "tags.kind = 'trial'") == []  # a dry run runs nothing
