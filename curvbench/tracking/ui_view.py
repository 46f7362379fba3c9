"""The saved view curvbench puts on each of its experiments, so that MLflow's UI shows what a run found.

MLflow 3's runs table opens on Source, Models and Dataset, none of which a curvbench run has; its 80-odd metric
and param columns are hidden. MLflow (3.15 on) keeps saved views of the runs table as experiment tags
`mlflow.sharedViewState.<id>` (a name, times and the table's state as JSON) and opens one from the URL
`#/experiments/<id>/runs?viewStateShareKey=<id>`, which `curvbench ui` prints; the view is also in the runs page's
Views menu. This one selects the key columns: the entry, seed and outcome, the best and final metric, time, epochs
and steps to target, and seconds per step.
"""

from __future__ import annotations

import json

from curvbench import record

VIEW_ID = "curvbench"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_ID
VIEW_NAME = "curvbench: key columns"


def _column(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"  # how the runs table names a column


def key_columns() -> list[str]:
    """The columns the view selects, in order. Both task metrics are named (accuracy, and F1 where a recipe
    scores by it); the table shows only columns that some run of the experiment has."""
    tags = [_column("tags", t) for t in (record.ENTRY, record.SEED, record.OUTCOME)]
    scores = [_column("metrics", m(record.split_metric(split, metric)))
              for metric in ("accuracy", "f1") for m, split in ((record.best_metric, "test"),
                                                                (record.final_metric, "test"),
                                                                (record.best_metric, "val"))]
    timing = [_column("metrics", m) for m in (record.TIME_TO_TARGET, record.EPOCHS_TO_TARGET, record.STEPS_TO_TARGET,
                                              record.SECONDS_PER_STEP, record.TRAIN_SECONDS)]
    return tags + scores + timing + [_column("tags", record.TIMING)]


TRAINING_RUNS = f"metrics.{record.STEPS} > 0"  # runs that trained: not the tune, to-target and report parents
# sorted by name (entry, its settings, seed): the table lists runs flat, not folded under their parents, when it is
# sorted by anything but the start time
BY_NAME = _column("tags", "mlflow.runName")


def view_state() -> dict:
    """The runs table's state as MLflow's UI saves it: the training runs by name, flat (their parents hold no
    curves and would fold them away), the key columns, every run in the charts. The filter shows in the search
    box, where the user can clear it."""
    return {"searchFilter": TRAINING_RUNS, "orderByKey": BY_NAME, "orderByAsc": True,
            "selectedColumns": key_columns(), "columnOrder": key_columns(), "columnWidths": {},
            "runsHiddenMode": "SHOW_ALL"}


def view_tag(now_ms: int) -> tuple[str, str]:
    """The experiment tag that holds the view: key and value (MLflow's saved-view envelope)."""
    value = json.dumps({"name": VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms,
                        "state": json.dumps(view_state(), separators=(",", ":"))}, separators=(",", ":"))
    return VIEW_TAG, value


def view_url(base: str, experiment_id: str) -> str:
    """The UI's address of an experiment's runs, opened on the view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_ID}"


def experiment_links(client, base: str) -> list[tuple[str, str]]:
    """(name, address) of every experiment that holds the view, in the store `client` reads."""
    return [(e.name, view_url(base, e.experiment_id)) for e in client.search_experiments() if VIEW_TAG in e.tags]
