"""The MLflow UI's saved view of curvbench's experiments: the tag MLflow's UI reads, columns that name what runs
really log, a filter that keeps the training runs and drops their parents, and the links `curvbench ui` prints.
(That the UI applies it was checked in headless Chromium from a fresh profile: see README, "Looking at runs".)"""

import json
import re

import pytest
from conftest import new_store
from mlflow.tracking import MlflowClient

from curvbench import record
from curvbench.recipe import loading as recipe
from curvbench.tracking.client import Tracker
from curvbench.tracking.ui_view import VIEW_ID, VIEW_NAME, VIEW_TAG, experiment_links, view_state
from curvbench.training.progress import QuietReporter
from curvbench.training.runner import run_recipe

RECIPE = """
task: {{dataset: mnist, data_dir: "{data}", download: false}}
training: {{epochs: 1, batch_size: 50, seeds: [0], validation: 0.1, device: cpu}}
methods:
  sgd: {{lr: 0.1}}
"""
COLUMN = re.compile(r"(attributes|params|metrics|tags)\.`([^`]+)`")


def envelope(exp) -> tuple[dict, dict]:
    """The view as MLflow's UI parses it: an object with a string name, a number createdAt and a JSON state."""
    outer = json.loads(exp.tags[VIEW_TAG])
    assert isinstance(outer["name"], str) and isinstance(outer["createdAt"], int)
    assert isinstance(outer["state"], str)
    return outer, json.loads(outer["state"])


def test_a_trained_runs_experiment_opens_on_columns_it_has(mnist_dir, write_recipe, tracking_uri):
    r = recipe.load(str(write_recipe(RECIPE.format(data=mnist_dir))))
    [outcome] = run_recipe(r, Tracker(tracking_uri), QuietReporter())
    client = MlflowClient(tracking_uri)
    run = client.get_run(outcome.run_id)
    outer, state = envelope(client.get_experiment(run.info.experiment_id))
    assert outer["name"] == VIEW_NAME
    columns = [COLUMN.fullmatch(c) for c in state["selectedColumns"]]
    assert all(columns), state["selectedColumns"]
    assert state["columnOrder"] == state["selectedColumns"]
    metrics = {m.group(2) for m in columns if m.group(1) == "metrics"}
    tags = {m.group(2) for m in columns if m.group(1) == "tags"}
    # a plain training run on an accuracy task has every column but the to-target and F1 ones
    want = {m for m in metrics if "f1" not in m and "to_target" not in m}
    assert want == {"best_test_accuracy", "final_test_accuracy", "best_val_accuracy", record.SECONDS_PER_STEP,
                    record.TRAIN_SECONDS}
    assert want <= set(run.data.metrics), want - set(run.data.metrics)
    assert tags <= set(run.data.tags), tags - set(run.data.tags)
    steps = client.get_metric_history(run.info.run_id, record.STEPS)[-1].value
    secs = client.get_metric_history(run.info.run_id, record.TRAIN_SECONDS)[-1].value
    assert run.data.metrics[record.SECONDS_PER_STEP] == pytest.approx(secs / steps)
    # the view's filter, run through MLflow's own search, finds the run
    assert [x.info.run_id for x in client.search_runs([run.info.experiment_id], state["searchFilter"])] == \
        [run.info.run_id]


def test_the_filter_keeps_training_runs_and_drops_their_parents(tmp_path):
    uri = new_store(tmp_path / "mlflow.db")
    tracker = Tracker(uri)
    parent = tracker.start("t", "to-target", {}, {record.KIND: record.TO_TARGET})
    child = tracker.start("t", "sgd s0", {}, {record.KIND: record.TO_TARGET_RUN}, parent.run_id)
    child.log_metrics({record.STEPS: 10, record.TRAIN_SECONDS: 1.0}, step=1)
    child.end("FINISHED")
    parent.log_metrics({"sgd.reached": 1}, step=0)
    parent.end("FINISHED")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("t")
    found = client.search_runs([exp.experiment_id], view_state()["searchFilter"])
    assert [x.info.run_id for x in found] == [child.run_id]
    # sorted by anything but the start time, MLflow's table lists runs flat instead of folding them under parents
    assert view_state()["orderByKey"] == "tags.`mlflow.runName`"


def test_older_experiments_get_the_view_and_a_view_the_user_saved_is_kept(tmp_path):
    uri = new_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    bare = client.create_experiment("bare")
    mine = client.create_experiment("mine", tags={VIEW_TAG: json.dumps({"name": "my columns", "createdAt": 1,
                                                                         "state": "{}"})})
    tracker = Tracker(uri)
    assert tracker.experiment_id("bare") == bare and tracker.experiment_id("mine") == mine
    assert envelope(client.get_experiment(bare))[0]["name"] == VIEW_NAME
    assert envelope(client.get_experiment(mine))[0]["name"] == "my columns"
    assert client.get_experiment(bare).tags[record.EXPERIMENT_KIND_TAG] == record.EXPERIMENT_KIND
    links = dict(experiment_links(client, "http://127.0.0.1:5000/"))
    assert links == {"bare": f"http://127.0.0.1:5000/#/experiments/{bare}/runs?viewStateShareKey={VIEW_ID}",
                     "mine": f"http://127.0.0.1:5000/#/experiments/{mine}/runs?viewStateShareKey={VIEW_ID}"}
