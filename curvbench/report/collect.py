"""Runs read back from MLflow for a report: one RunData per run (its params, tags, curves), the searches (tune
parents) they came from, and the labels that tell settings apart."""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from curvbench import record
from curvbench.errors import CurvbenchError
from curvbench.report import stats
from curvbench.report.batch_scaling import edge_of

# the curves a report reads from every run (the test metric's own curve is read as well: see collect)
CURVES = (record.split_metric("test", "accuracy"), record.split_metric("test", "loss"), record.TRAIN_LOSS)
# what adaptive K-FAC chose per epoch: drawn in one figure per task when a run has them
def epoch_metrics_of(method: str) -> tuple:
    """What a method declares it reports per epoch (MethodSpec.epoch_metrics); none for a method this
    installation does not know (a plugin not installed here)."""
    from curvbench import methods

    try:
        return methods.get(method).epoch_metrics
    except Exception:  # noqa: BLE001 - an unknown or unimportable method: its runs are shown without them
        return ()


def outcome_of(tags: dict) -> str | None:
    """The run's outcome tag; for a run whose dead process was ended as FAILED by a store from before that tag was
    set, PROCESS_ENDED read from the reason it was given (tracking.client names it so)."""
    if record.OUTCOME in tags:
        return tags[record.OUTCOME]
    return record.PROCESS_ENDED if record.PROCESS_ENDED_REASON in tags.get(record.STATUS_REASON, "") else None


@dataclass
class RunData:
    run_id: str
    task: str
    entry: str
    seed: str
    status: str
    batch_size: str
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(epoch, value)]
    metrics: dict[str, float] = field(default_factory=dict)
    target_reached: str | None = None
    metric: str = "accuracy"
    method: str = "?"
    study: str | None = None  # a tune trial: its study and number
    trial: int | None = None
    params: dict = field(default_factory=dict)
    protocol: str = "train"  # train, or "to-target >= 0.985": runs stopped at a target are not compared with others
    outcome: str | None = None  # finished, diverged, stopped early, process ended; none for a run ended by an error
    label: str = ""  # the entry, and what sets its configuration apart from others of that entry (assign_labels)
    recipe: str = "?"  # the recipe's name (tag): to-target runs of different recipes are different settings
    target: float | None = None  # the target a to-target run aimed at
    timing: str | None = None  # the timing tag: quiet, busy, or None (a run from before it was recorded)
    execution: dict = field(default_factory=dict)  # how the task computed (precision, memory format), where tagged

    def configuration(self) -> tuple:
        """Everything a run's numbers depend on besides its seed: the resolved hyperparameters of its entry,
        the training settings, the task and the protocol. Runs are only averaged when this is equal."""
        skip = ("training.seeds", "training.log_every", "task.data_dir", "task.download", "name", "description",
                "experiment")
        own = f"methods.{self.entry}."
        keep = {k: v for k, v in self.params.items()
                if k not in skip and (k.startswith(("training.", "task.")) or k.startswith(own))}
        keep.update({f"execution.{k}": v for k, v in self.execution.items()})  # float32 and bf16: two settings
        return (self.protocol, *sorted(keep.items()))

    def curve(self, key: str) -> list[float]:
        return [v for _, v in sorted(self.curves.get(key, []))]

    def score(self) -> float | None:
        """Best validation value of the metric (test when there is no validation split): how tune ranks trials."""
        c = self.curve(record.split_metric("val", self.metric)) or self.curve(record.split_metric("test", self.metric))
        return max(c) if c else None


@dataclass
class Search:
    task: str
    entry: str
    study: str
    trials: list[RunData]  # every run of the search (a trial with N seeds has N runs)
    best: RunData  # the best trial's first run
    varied: dict  # hyperparameter -> value in the best trial, for those the trials differ in
    best_runs: list[RunData] = field(default_factory=list)  # the best trial's runs, one per seed
    n_trials: int = 0
    best_score: float | None = None  # the median over the best trial's seeds
    scores: list[float] = field(default_factory=list)  # every scored trial's score, in trial order
    seconds: float = 0.0  # training seconds of every run of the search, pruned and diverged ones included
    space: dict = field(default_factory=dict)  # hyperparameter -> its range ({low, high, log}) or grid, as searched

    def edges(self) -> dict[str, str]:
        """Hyperparameters whose best value may not be the best there is (batch_scaling.edge_of): at an edge of the
        range searched, or the lowest or highest of the values the trials tried."""
        own, out = f"methods.{self.entry}.", {}
        for hp, searched in self.space.items():
            best = self.best.params.get(own + hp)
            if not _is_number(best):
                continue
            tried = [float(r.params[own + hp]) for r in self.trials if _is_number(r.params.get(own + hp))]
            edge = edge_of(float(best), tried, searched)
            if edge is not None:
                out[hp] = edge
        return out

    def chosen(self) -> str:
        """The best trial's whole point: every hyperparameter of its entry, those the trials varied first."""
        own = f"methods.{self.entry}."
        point = {k[len(own):]: v for k, v in sorted(self.best.params.items())
                 if k.startswith(own) and k[len(own):] != "method"}
        ordered = {**{k: point.get(k, v) for k, v in self.varied.items()}, **point}
        edges = self.edges()
        return ", ".join(f"{k}={_short_value(v)}" + (f" ({edges[k]}: the best may lie beyond)" if k in edges else "")
                         for k, v in ordered.items()) or "-"

    def expected_best(self) -> list[float]:
        """The expected best score after k = 1 .. n trials (Dodge et al. 2019; k-subsets of the trials)."""
        return [stats.expected_best(self.scores, k) for k in range(1, len(self.scores) + 1)]

    def score_text(self) -> str:
        split = "val" if self.best.curve(record.split_metric("val", self.best.metric)) else "test"
        return f"{self.best_score:.4f} ({split})"


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _short_value(v) -> str:
    """A logged value as text, long floats to 4 significant digits (0.04735 for 0.04735488807610151); short ones
    (10.0, 0.001) as logged."""
    if len(str(v)) <= 8:
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.4g}" if "." in str(v) or "e" in str(v).lower() else str(v)


class Collected(list):
    """The runs a report shows, how many of the selected runs it left out, by status (killed, running), and the
    spaces the selected searches ran over: {(task, study): {hyperparameter: range or grid}}."""

    left_out: dict
    spaces: dict


def left_out_note(runs) -> str | None:
    """The report's sentence on the runs it does not show (killed or still running: incomplete curves)."""
    left = dict(getattr(runs, "left_out", {}) or {})
    if not left:
        return None
    parts = [f"{n} {status}" for status, n in sorted(left.items())]
    return (f"Left out: {', '.join(parts)} run(s), whose curves are incomplete (a killed to-target run that resumed "
            f"from its checkpoint is shown by the run that went on).")


def collect(client, experiment=None, parent=None, task=None, methods=None, since=None) -> list[RunData]:
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise CurvbenchError(f"--experiment: no experiment named {experiment!r} in the store")
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    filters = []
    parents = [parent] if isinstance(parent, str) else list(parent or [])
    for p in parents:
        check_run_id(client, p, "--parent")
    if parents:
        filters.append(f"tags.{record.PARENT} IN (" + ", ".join(f"'{p}'" for p in parents) + ")")
    if since:
        try:
            start = dt.datetime.fromisoformat(since)
        except ValueError:
            raise CurvbenchError(f"--since: expected a date such as 2026-11-24 or 2026-11-24T10:00, got {since!r}") from None
        if start.tzinfo is None:
            start = start.astimezone()
        filters.append(f"attributes.start_time >= {int(start.timestamp() * 1000)}")
    runs, left_out, spaces = Collected(), Counter(), {}
    for r in _search_all(client, exp_ids, " and ".join(filters)):
        tags = r.data.tags
        if tags.get(record.KIND) == record.TUNE and record.STUDY in tags:
            spaces[(tags.get(record.TASK, "?"), tags[record.STUDY])] = _space_of(r.data.params)
        if tags.get(record.KIND) in record.PARENT_KINDS:
            continue
        if task and tags.get(record.TASK) != task:  # compared here, not in MLflow's filter: any text is safe
            continue
        entry = tags.get(record.ENTRY, tags.get(record.METHOD, "?"))
        if methods and entry not in methods and tags.get(record.METHOD) not in methods:
            continue
        if r.info.status in ("RUNNING", "SCHEDULED", "KILLED"):
            left_out[r.info.status.lower()] += 1  # said in the report, never dropped without a word
            continue  # still going, orphaned or interrupted: its curves are incomplete
        if record.TRAIN_LOSS not in r.data.metrics and r.info.status != "FAILED":
            continue  # nothing to show (a run that diverged before its first epoch ended still counts, as diverged)
        trial = tags.get(record.KIND) == record.TRIAL_RUN
        to_target = tags.get(record.KIND) == record.TO_TARGET_RUN and record.TARGET in tags
        recipe = tags.get(record.RECIPE, "?")
        protocol = (f"to-target >= {tags[record.TARGET]}" + (f", {recipe}" if record.RECIPE in tags else "")
                    if to_target else "train")
        data = RunData(r.info.run_id, tags.get(record.TASK, "?"), entry, tags.get(record.SEED, "0"), r.info.status,
                       r.data.params.get("training.batch_size", "?"), metrics=dict(r.data.metrics),
                       target_reached=tags.get(record.TARGET_REACHED),
                       metric=r.data.params.get("task.metric", "accuracy"), method=tags.get(record.METHOD, entry),
                       study=tags.get(record.STUDY, "?") if trial else None,
                       trial=int(tags.get(record.TRIAL, -1)) if trial else None, params=dict(r.data.params),
                       protocol=protocol, outcome=outcome_of(tags), recipe=recipe, timing=tags.get(record.TIMING),
                       execution={k: tags[k] for k in record.EXECUTION if k in tags},
                       target=float(tags[record.TARGET]) if to_target else None)
        own = tuple(m.key for m in epoch_metrics_of(data.method))
        keys = CURVES + own + (record.EPOCH_SECONDS, record.TRAIN_SECONDS, record.STEPS,
                                      record.split_metric("test", data.metric), record.split_metric("val", data.metric))
        for key in dict.fromkeys(keys):  # once each: test_accuracy is both a curve and, mostly, the task's metric
            data.curves[key] = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)]
        runs.append(data)
    runs.left_out, runs.spaces = dict(left_out), spaces
    return runs


def _space_of(params: dict) -> dict:
    """A tune parent's `space.<hp>` params (the range or grid as Python wrote it) read back."""
    import ast

    out = {}
    for k, v in params.items():
        if k.startswith(record.SPACE_PARAM):
            try:
                out[k[len(record.SPACE_PARAM):]] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                continue  # a space this version cannot read: shown without its edges
    return out


RUN_ID = re.compile(r"[0-9a-f]{32}")


def check_run_id(client, run_id: str, flag: str) -> None:
    """A run id as MLflow writes them (32 hex digits), of a run in this store."""
    if not RUN_ID.fullmatch(run_id):
        raise CurvbenchError(f"{flag} {run_id!r}: expected a run id of 32 hexadecimal digits (the parent run printed by "
                             f"tune or to-target)")
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own exception for a missing run
        raise CurvbenchError(f"{flag} {run_id}: no such run in the store") from None


def _search_all(client, exp_ids, filter_string):
    token = None
    while True:
        page = client.search_runs(exp_ids, filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def searches(runs: list[RunData]) -> list[Search]:
    """The tune trials grouped by study, each with its best trial, the hyperparameters the trials varied and the
    space it searched (when `runs` was collected with its searches' parents)."""
    spaces = getattr(runs, "spaces", None) or {}
    studies: dict[tuple[str, str], list[RunData]] = defaultdict(list)
    for r in runs:
        if r.study is not None:
            studies[(r.task, r.study)].append(r)
    out = []
    for (task, study), runs in sorted(studies.items()):
        runs.sort(key=lambda r: (r.trial, r.seed))
        by_trial: dict[int, list[RunData]] = defaultdict(list)
        for r in runs:
            by_trial[r.trial].append(r)
        scores = {t: statistics.median([r.score() for r in rs]) for t, rs in by_trial.items()
                  if all(r.score() is not None for r in rs)}  # as tune scores a trial: the median over its seeds
        if not scores:
            continue
        best_trial = max(scores, key=lambda t: scores[t])
        best_runs = by_trial[best_trial]
        best = best_runs[0]
        keys = {k for r in runs for k in r.params if k.startswith("methods.")}
        varied = {k.split(".")[-1]: best.params.get(k) for k in sorted(keys)
                  if len({r.params.get(k) for r in runs}) > 1}
        seconds = sum(r.curve(record.TRAIN_SECONDS)[-1] for r in runs if r.curve(record.TRAIN_SECONDS))
        out.append(Search(task, best.entry, study, runs, best, varied, best_runs, len(by_trial), scores[best_trial],
                          [scores[t] for t in sorted(scores)], seconds, spaces.get((task, study), {})))
    return out


def compared(runs: list[RunData], found: list[Search]) -> list[RunData]:
    """What the figures and the main table compare: every run outside a search, and each search's best trial,
    each labelled so that runs of different configurations never share a label."""
    import dataclasses

    plain = [r for r in runs if r.study is None]
    studies_of = Counter((s.task, s.entry) for s in found)  # two studies of one entry: each row names its study

    def label(s: Search) -> str:
        of = f" of {s.study}" if studies_of[(s.task, s.entry)] > 1 else ""
        return f"{s.entry} (best of {s.n_trials} trials{of})"

    tuned = [dataclasses.replace(r, label=label(s)) for s in found for r in s.best_runs]
    assign_labels(plain)
    return plain + tuned


def _short(key: str) -> str:
    return key.split(".")[-1]


def execution_word(value) -> str:
    """An execution tag's value in one word, as labels and claim settings show it: "bf16 autocast (float32 loss
    and statistics)" -> bf16."""
    return str(value).split()[0]


def _label_value(key: str, v) -> str:
    return execution_word(v) if key.startswith("execution.") else _short_value(v)


def assign_labels(runs: list[RunData]) -> None:
    """Label each run by its entry, plus, where runs of one entry and task differ in configuration, the settings
    that differ (lr=10, epochs=3) and the protocol (to-target >= 0.985): one label, one configuration."""
    by_entry: dict[tuple[str, str], dict[tuple, list[RunData]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by_entry[(r.task, r.entry)][r.configuration()].append(r)
    for (task, entry), configs in by_entry.items():
        if len(configs) == 1:
            for rs in configs.values():
                for r in rs:
                    r.label = entry if rs[0].protocol == "train" else f"{entry} [{rs[0].protocol}]"
            continue
        dicts = {c: dict(c[1:]) for c in configs}
        keys = sorted({k for d in dicts.values() for k in d})
        varied = [k for k in keys if len({d.get(k) for d in dicts.values()}) > 1]
        for c, rs in configs.items():
            parts = [f"{_short(k)}={_label_value(k, dicts[c].get(k, '-'))}" for k in varied]
            label = entry + (f" ({', '.join(parts)})" if parts else "")
            if c[0] != "train":  # plain training is unmarked; any other protocol says so
                label += f" [{c[0]}]"
            for r in rs:
                r.label = label
