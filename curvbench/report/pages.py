"""Reports from the MLflow store: the thesis's figures (accuracy, test and train loss against epochs with a band
over seeds, training time, time and epochs to target) and an AlgoPerf-style performance profile; tables of
best and final accuracy, seconds per epoch, total time, time and epochs to target and step time relative to SGD.
Written as PNGs, report.md and one self-contained report.html, and logged as artifacts of a report run."""

from __future__ import annotations

import base64
import datetime as dt
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from curvbench import record
from curvbench.errors import CurvbenchError
from curvbench.report import batch_scaling, stats

CURVES = (record.split_metric("test", "accuracy"), record.split_metric("test", "loss"), record.TRAIN_LOSS)
# what adaptive K-FAC chose per epoch: drawn in one figure per task when a run has them
ADAPTATION = (record.KFAC_DAMPING, record.KFAC_GAMMA, record.KFAC_ALPHA, record.KFAC_MU)


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
    outcome: str | None = None  # the outcome tag: finished, diverged, stopped early; none for a run that crashed
    label: str = ""  # the entry, and what sets its configuration apart from others of that entry (assign_labels)
    recipe: str = "?"  # the recipe's name (tag): to-target runs of different recipes are different settings
    target: float | None = None  # the target a to-target run aimed at
    timing: str | None = None  # the timing tag: quiet, busy, or None (a run from before it was recorded)

    def configuration(self) -> tuple:
        """Everything a run's numbers depend on besides its seed: the resolved hyperparameters of its entry,
        the training settings, the task and the protocol. Runs are only averaged when this is equal."""
        skip = ("training.seeds", "training.log_every", "task.data_dir", "task.download", "name", "description",
                "experiment")
        own = f"methods.{self.entry}."
        keep = {k: v for k, v in self.params.items()
                if k not in skip and (k.startswith(("training.", "task.")) or k.startswith(own))}
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

    def chosen(self) -> str:
        return ", ".join(f"{k}={_short_value(v)}" for k, v in self.varied.items()) or "-"

    def expected_best(self) -> list[float]:
        """The expected best score after k = 1 .. n trials (Dodge et al. 2019; k-subsets of the trials)."""
        return [stats.expected_best(self.scores, k) for k in range(1, len(self.scores) + 1)]

    def score_text(self) -> str:
        split = "val" if self.best.curve(record.split_metric("val", self.best.metric)) else "test"
        return f"{self.best_score:.4f} ({split})"


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
    runs = []
    for r in _search_all(client, exp_ids, " and ".join(filters)):
        tags = r.data.tags
        if tags.get(record.KIND) in record.PARENT_KINDS:
            continue
        if record.TRAIN_LOSS not in r.data.metrics and r.info.status != "FAILED":
            continue  # nothing to show (a run that diverged before its first epoch ended still counts, as diverged)
        if r.info.status in ("RUNNING", "SCHEDULED", "KILLED"):
            continue  # still going, orphaned or interrupted: its curves are incomplete
        if task and tags.get(record.TASK) != task:  # compared here, not in MLflow's filter: any text is safe
            continue
        entry = tags.get(record.ENTRY, tags.get(record.METHOD, "?"))
        if methods and entry not in methods and tags.get(record.METHOD) not in methods:
            continue
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
                       protocol=protocol, outcome=tags.get(record.OUTCOME), recipe=recipe, timing=tags.get(record.TIMING),
                       target=float(tags[record.TARGET]) if to_target else None)
        for key in CURVES + ADAPTATION + (record.EPOCH_SECONDS, record.TRAIN_SECONDS, record.STEPS,
                            record.split_metric("test", data.metric), record.split_metric("val", data.metric)):
            data.curves[key] = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)]
        runs.append(data)
    return runs


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


def check_out_folder(out: Path) -> None:
    """The report folder can be made and written, before any figure is drawn."""
    import os

    if out.exists() and not out.is_dir():
        raise CurvbenchError(f"--out {out}: is a file; expected a folder for report.md, report.html and the figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CurvbenchError(f"--out {out}: cannot create the folder ({e.strerror or e.__class__.__name__})") from None
    if not os.access(out, os.W_OK):
        raise CurvbenchError(f"--out {out}: the folder is not writable")


def _search_all(client, exp_ids, filter_string):
    token = None
    while True:
        page = client.search_runs(exp_ids, filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def searches(runs: list[RunData]) -> list[Search]:
    """The tune trials grouped by study, each with its best trial and the hyperparameters the trials varied."""
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
                          [scores[t] for t in sorted(scores)], seconds))
    return out


def compared(runs: list[RunData], found: list[Search]) -> list[RunData]:
    """What the figures and the main table compare: every run outside a search, and each search's best trial,
    each labelled so that runs of different configurations never share a label."""
    import dataclasses

    plain = [r for r in runs if r.study is None]
    tuned = [dataclasses.replace(r, label=f"{s.entry} (best of {s.n_trials} trials)") for s in found for r in s.best_runs]
    assign_labels(plain)
    return plain + tuned


def _short(key: str) -> str:
    return key.split(".")[-1]


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
            parts = [f"{_short(k)}={_short_value(dicts[c].get(k, '-'))}" for k in varied]
            label = entry + (f" ({', '.join(parts)})" if parts else "")
            if c[0] != "train":  # plain training is unmarked; any other protocol says so
                label += f" [{c[0]}]"
            for r in rs:
                r.label = label


@dataclass
class Row:
    task: str
    entry: str
    runs: int
    best: float | None
    final: float | None
    sec_per_epoch: float | None
    total: float | None
    ttt: stats.Censored | None  # seconds to target over every seed that aimed at it (inf: not reached)
    ett: stats.Censored | None  # epochs to target, likewise
    reached: str  # "2/3", or "" when no run aimed at a target
    ratio_sgd: float | None
    metric: str = "accuracy"
    method: str = "?"
    tuned: bool = False  # the best trial of a search, not a run of its own
    sec_per_step: float | None = None  # training seconds / steps, mean over the runs
    failed: int = 0  # runs of the row that diverged
    errors: int = 0  # runs of the row that ended by an error (no outcome): their curves, if any, are cut short
    stt: stats.Censored | None = None  # steps to target
    name: str = ""  # the recipe entry (the label adds what sets the configuration apart)
    protocol: str = "train"
    recipe: str = "?"
    target: float | None = None
    vs: stats.Comparison | None = None  # seconds to target against the baseline of its setting
    search: "Search | None" = None  # the search whose winner this row runs, when one is in the selection
    params: dict = field(default_factory=dict)  # the first run's params (all runs of a row share them but the seed)
    busy: int = 0  # runs of the row timed while other processes used the cores they needed


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _censored(runs: list[RunData], metric: str) -> stats.Censored | None:
    """`metric` (time_to_target, ...) over the runs that aimed at a target, inf where it was not reached."""
    import math

    aimed = [r for r in runs if r.target_reached is not None]
    if not aimed:
        return None
    return stats.Censored(tuple(r.metrics[metric] if r.target_reached == "true" and metric in r.metrics else math.inf
                                for r in aimed))


def _sec_per_step(r: RunData) -> float | None:
    secs, steps = r.curve(record.TRAIN_SECONDS), r.curve(record.STEPS)
    return secs[-1] / steps[-1] if secs and steps and steps[-1] else None


def summarise(runs: list[RunData], baseline: str = "sgd") -> list[Row]:
    """One row per task and configuration (label): every number in a row comes from runs that differ only in
    their seed. Rows of to-target runs are tested against the `baseline` entry of the same setting (task, recipe,
    target)."""
    if any(not r.label for r in runs):
        assign_labels([r for r in runs if not r.label])
    groups: dict[tuple[str, str], list[RunData]] = defaultdict(list)
    for r in runs:
        groups[(r.task, r.label)].append(r)
    rows = []
    for (task, entry), rs in sorted(groups.items()):
        metric = rs[0].metric
        key = record.split_metric("test", metric)
        best = _mean([max(r.curve(key)) if r.curve(key) else None for r in rs])
        final = _mean([r.curve(key)[-1] if r.curve(key) else None for r in rs])
        spe = _mean([_mean(r.curve(record.EPOCH_SECONDS)) for r in rs])
        total = _mean([r.curve(record.TRAIN_SECONDS)[-1] if r.curve(record.TRAIN_SECONDS) else None for r in rs])
        ttt = _censored(rs, record.TIME_TO_TARGET)
        rows.append(Row(task, entry, len(rs), best, final, spe, total, ttt, _censored(rs, record.EPOCHS_TO_TARGET),
                        f"{ttt.reached}/{ttt.n}" if ttt else "", None, metric, rs[0].method,
                        rs[0].study is not None, _mean([_sec_per_step(r) for r in rs]),
                        sum(r.status == "FAILED" and r.outcome == "diverged" for r in rs),
                        sum(r.status == "FAILED" and r.outcome is None for r in rs),
                        _censored(rs, record.STEPS_TO_TARGET), rs[0].entry, rs[0].protocol, rs[0].recipe,
                        rs[0].target, params=rs[0].params, busy=sum(r.timing == "busy" for r in rs)))
    # step time relative to SGD, within runs measured alike: searches' best trials against SGD's best trial,
    # the other runs against the other SGD runs (a search and a later comparison ran under different loads).
    # Seconds per step = training seconds / steps, so runs stopped inside an epoch (at a target) count right.
    for task in {r.task for r in rows}:
        batch = {r.batch_size for r in runs if r.task == task}
        for tuned in (False, True):
            same = [r for r in rows if r.task == task and r.tuned == tuned]
            sgd = next((r for r in same if r.method == "sgd" and r.entry.split(" ")[0] == "sgd"), None)
            if sgd and len(batch) == 1:  # the same batch size
                for row in same:
                    if row.sec_per_step and sgd.sec_per_step:
                        row.ratio_sgd = row.sec_per_step / sgd.sec_per_step
                    elif row.sec_per_epoch and sgd.sec_per_epoch:  # runs logged without steps: whole epochs
                        row.ratio_sgd = row.sec_per_epoch / sgd.sec_per_epoch
    for row in rows:
        base = next((b for b in rows if b.ttt is not None and b.task == row.task and b.protocol == row.protocol
                     and b.name == baseline), None)
        if row.ttt is not None and base is not None and base is not row:
            row.vs = stats.compare(row.ttt, base.ttt, baseline)
    return rows


def link_searches(rows: list[Row], found: list[Search]) -> None:
    """A to-target row whose hyperparameters are a search's winner (same task and entry) gets that search, so its
    time to target can be shown with the search's cost added."""
    for row in rows:
        if row.ttt is None:
            continue
        for s in found:
            if s.task != row.task or s.entry != row.name:
                continue
            keys = [k for k in s.best.params if k.startswith(f"methods.{s.entry}.")]
            if keys and all(row.params.get(k) == s.best.params.get(k) for k in keys):
                row.search = s


def settings_of(rows: list[Row]) -> dict:
    """The to-target rows as claims.evaluate reads them: {(task, recipe, target): {entry: {measure: Censored}}}."""
    out: dict = defaultdict(dict)
    for r in rows:
        if r.ttt is not None and r.target is not None:
            out[(r.task, r.recipe, r.target)][r.name] = {"seconds": r.ttt, "epochs": r.ett, "steps": r.stt}
    return dict(out)


def _f(x, fmt="{:.4f}"):
    return "-" if x is None else fmt.format(x)


def _ft(c: stats.Censored | None, fmt="{:.2f}"):
    return "-" if c is None else c.text(fmt)


def _with_search(r: Row) -> str:
    """Seconds to target plus the search that found the setting (the median's ends moved by the same amount)."""
    import math

    if r.search is None or r.ttt is None:
        return "-"
    m = r.ttt.median
    return "not reached" if math.isinf(m) else f"{m + r.search.seconds:.1f} ({r.search.seconds:.0f} s search)"


def _runs(r: Row) -> str:
    notes = ([f"{r.failed} diverged"] if r.failed else []) + ([f"{r.errors} failed by an error"] if r.errors else [])
    return f"{r.runs} ({', '.join(notes)})" if notes else str(r.runs)


COLUMNS = ("task", "method", "runs", "best test metric", "final test metric", "s/epoch", "total train s",
           "reached", "time to target s", "epochs to target", "with its search s", "step time / SGD",
           "against the baseline")


def row_cells(r: Row) -> list[str]:
    """One table row's cells, for Markdown and HTML alike; times measured on a busy machine carry a mark."""
    aimed = r.ttt is not None
    mark = f" (busy: {r.busy}/{r.runs})" if r.busy else ""
    return [r.task, r.entry, _runs(r), _f(r.best), _f(r.final), _f(r.sec_per_epoch, "{:.2f}") + mark,
            _f(r.total, "{:.1f}") + mark, r.reached or "-", (_ft(r.ttt) + mark) if aimed else "-",
            _ft(r.ett) if aimed else "-", _with_search(r), _f(r.ratio_sgd, "{:.2f}"),
            "-" if r.vs is None else r.vs.text()]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(row_cells(r)) + " |")
    return "\n".join(lines) + "\n"


def search_table(found: list[Search]) -> str:
    lines = ["| task | method | study | trials | seeds per score | best score | best trial | its hyperparameters | "
             "search s | expected best after k trials |", "|" + "---|" * 10]
    for s in found:
        lines.append(f"| {s.task} | {s.entry} | {s.study} | {s.n_trials} | {len(s.best_runs)} | {s.score_text()} | "
                     f"{s.best.trial} | {s.chosen()} | {s.seconds:.0f} | {_expected_text(s)} |")
    return "\n".join(lines) + "\n"


def _expected_text(s: Search) -> str:
    """k=1: 0.9712, 2: 0.9790, 4: ..., n: ...: the expected best after 1, 2, 4, ... and all trials."""
    e = s.expected_best()
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k <= len(e)} | {len(e)}) if e else []
    return ", ".join(f"k={k}: {e[k - 1]:.4f}" for k in ks) or "-"


# ------------------------------------------------------------------------------------------------- figures
BAND = "band: min to max over seeds"


def _legend(ax, n: int) -> None:
    """Inside the axes for a few lines, beside them for many: a legend never hides ten curves."""
    if n > 5:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title_fontsize="small")
    else:
        ax.legend(fontsize="small")


def _curve_figure(runs, task, key, ylabel, path) -> str:
    """Mean over seeds per label, a min-max band where there are several seeds. Losses on a log axis. Diverged
    runs: dashed with an x at their last value on accuracy, left out of loss figures (a loss of 1e10 would
    flatten every other curve); the caption says which. Returns the caption."""
    import matplotlib.pyplot as plt

    by_entry, diverged = defaultdict(list), set()
    for r in runs:
        if r.task == task and r.status == "FAILED" and r.outcome == "diverged":
            diverged.add(r.label or r.entry)
        if r.task == task and r.curves.get(key):
            by_entry[r.label or r.entry].append(dict(r.curves[key]))
    never_drawn = sorted(diverged - set(by_entry))  # diverged before they logged a value
    loss = key.endswith("loss")
    fig, ax = plt.subplots(figsize=(6.5 if len(by_entry) <= 5 else 8.5, 4))
    banded, left_out = False, []
    for entry, curves in sorted(by_entry.items()):
        if loss and entry in diverged:
            left_out.append(entry)
            continue
        epochs = sorted(set().union(*curves))
        vals = [[c[e] for c in curves if e in c] for e in epochs]
        mean = [statistics.fmean(v) for v in vals]
        style = dict(ls="--", marker=None) if entry in diverged else dict(marker="o", ms=3)
        line, = ax.plot(epochs, mean, label=entry + (" (diverged)" if entry in diverged else ""), **style)
        if entry in diverged:
            ax.plot(epochs[-1:], mean[-1:], marker="x", ms=9, mew=2, color=line.get_color())
        if len(curves) > 1:
            banded = True
            ax.fill_between(epochs, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2, color=line.get_color())
    if loss:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel + (" (log scale)" if loss else ""))
    ax.set_title(f"{task}: {ylabel}")
    ax.grid(alpha=0.3, which="both" if loss else "major")
    if ax.lines:
        _legend(ax, len(by_entry))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    caption = f"{task}: {ylabel} per epoch, mean over seeds" + (f"; {BAND}" if banded else "")
    if left_out or never_drawn:
        caption += f"; left out (diverged): {', '.join(left_out + never_drawn)}"
    if diverged - set(left_out) - set(never_drawn):
        caption += "; dashed with an x: diverged runs, up to their last epoch"
    return caption


def _adaptation_figure(runs, task, path) -> str:
    """Adaptive K-FAC's choices per epoch, mean over seeds per label, on a log axis: the damping lambda (solid),
    the factors' gamma (dashed), the mean step size alpha (dotted) and, where used, the mean momentum mu."""
    import matplotlib.pyplot as plt

    by_label: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.task == task and r.curves.get(record.KFAC_DAMPING):
            for key in ADAPTATION:
                if r.curves.get(key):
                    by_label[r.label or r.entry][key].append(dict(r.curves[key]))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    styles = {record.KFAC_DAMPING: ("-", "lambda"), record.KFAC_GAMMA: ("--", "gamma"),
              record.KFAC_ALPHA: (":", "alpha"), record.KFAC_MU: ("-.", "mu")}
    for i, (label, curves) in enumerate(sorted(by_label.items())):
        color = f"C{i}"
        for key, seeds in curves.items():
            epochs = sorted(set().union(*seeds))
            mean = [statistics.fmean([c[e] for c in seeds if e in c]) for e in epochs]
            if key == record.KFAC_MU and not any(mean):
                continue  # momentum off
            ls, name = styles[key]
            ax.plot(epochs, [abs(v) for v in mean], ls=ls, color=color, marker="o", ms=3, label=f"{label}: {name}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("value (log scale)")
    ax.set_title(f"{task}: adaptive K-FAC's damping, gamma and step size")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, len(ax.lines))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"{task}: adaptive K-FAC per epoch, mean over seeds: lambda (the model's damping, solid) and gamma (the "
            f"factors', dashed) at the epoch's end, alpha (dotted) and mu (dash-dot, |mu|) averaged over its steps")


def _bar_figure(labels, values, errs, ylabel, title, path, missing=()):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) + 2.5), 4.5))
    top = max([v for v in values if v is not None] or [1.0])
    heights = [v if v is not None else top * 1.05 for v in values]
    yerr = [[lo for lo, _ in errs], [hi for _, hi in errs]] if any(lo or hi for lo, hi in errs) else None
    bars = ax.bar(range(len(labels)), heights, yerr=yerr, capsize=4,
                  color=["#bbbbbb" if v is None else f"C{i % 10}" for i, v in enumerate(values)])
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 2 or max(map(len, labels)) > 12 else 0,
                  ha="right" if len(labels) > 2 or max(map(len, labels)) > 12 else "center", fontsize="small")
    for bar, v in zip(bars, values):
        if v is None:
            bar.set_hatch("//")
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), "not reached", ha="center", va="bottom",
                    fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _profile_figure(rows, path):
    """Dolan-More / AlgoPerf performance profile: fraction of tasks each method reaches within tau x the fastest."""
    import math

    import matplotlib.pyplot as plt

    times: dict[str, dict[str, float | None]] = defaultdict(dict)
    for r in rows:
        if r.reached:
            times[r.task][r.entry] = None if math.isinf(r.ttt.median) else r.ttt.median
    tasks = [t for t, d in times.items() if any(v is not None for v in d.values())]
    entries = sorted({e for d in times.values() for e in d})
    taus = [1 + 0.05 * i for i in range(0, 81)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in entries:
        fr = []
        for tau in taus:
            ok = sum(1 for t in tasks if times[t].get(e) is not None
                     and times[t][e] <= tau * min(v for v in times[t].values() if v is not None))
            fr.append(ok / len(tasks))
        ax.step(taus, fr, where="post", label=e)
    ax.set_xlabel("tau (time to target / fastest)")
    ax.set_ylabel("fraction of tasks")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("performance profile")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return profile_values(times, tasks, entries)


def profile_values(times, tasks, entries, tau: float = 1.0) -> dict[str, float]:
    return {e: sum(1 for t in tasks if times[t].get(e) is not None
                   and times[t][e] <= tau * min(v for v in times[t].values() if v is not None)) / len(tasks)
            for e in entries}


def write_report(runs: list[RunData], out: Path, claims=None, baseline: str = "sgd") -> tuple[list[Row], list[Path]]:
    """The report into `out`; with `claims` (curvbench.claims.Claim list) a section judging each claim."""
    import matplotlib

    matplotlib.use("Agg")
    n_read = len(runs)
    found = searches(runs)
    runs = compared(runs, found)
    rows = summarise(runs, baseline)
    link_searches(rows, found)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    captions: dict[str, str] = {}
    tasks = sorted({r.task for r in runs})
    for task in tasks:
        for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss"), ("train_loss", "train loss")):
            if any(r.curves.get(key) for r in runs if r.task == task):
                p = out / f"{task}_{key}.png"
                captions[p.name] = _curve_figure(runs, task, key, label, p)
                figures.append(p)
        key = record.split_metric("test", "accuracy")
        if any(r.curves.get(key) and r.curves.get(record.TRAIN_SECONDS) for r in runs if r.task == task):
            p = out / f"{task}_test_accuracy_seconds.png"
            captions[p.name] = _time_curve_figure(runs, task, key, "test accuracy", p)
            figures.append(p)
        if any(r.curves.get(record.KFAC_DAMPING) for r in runs if r.task == task):
            p = out / f"{task}_kfac_adaptation.png"
            captions[p.name] = _adaptation_figure(runs, task, p)
            figures.append(p)
        trows = [r for r in rows if r.task == task]
        p = out / f"{task}_train_time.png"
        _bar_figure([r.entry for r in trows], [r.total for r in trows], [(0, 0) for _ in trows],
                    "training seconds", f"{task}: training time (evaluation excluded)", p)
        captions[p.name] = f"{task}: total training seconds per configuration, mean over seeds (evaluation excluded)"
        figures.append(p)
        aimed = [r for r in trows if r.reached]
        if aimed:
            for attr, label, name in (("ttt", "seconds to target", "time_to_target"),
                                      ("ett", "epochs to target", "epochs_to_target")):
                p = out / f"{task}_{name}.png"
                _interval_bars([r.entry for r in aimed], [getattr(r, attr) for r in aimed], label,
                               f"{task}: {label} (median over all seeds, interval)", p)
                captions[p.name] = (f"{task}: {label}, median over all seeds (a seed that missed counts as not "
                                    f"reached), whiskers its order-statistic interval; hatched: median not reached; "
                                    f"an arrow: the interval's upper end is not reached")
                figures.append(p)
        tfound = [f for f in found if f.task == task and f.scores]
        if tfound:
            p = out / f"{task}_expected_best.png"
            _expected_best_figure(tfound, task, p)
            captions[p.name] = (f"{task}: expected best validation score after k trials of each search (k-subsets "
                                f"of its trials, Dodge et al. 2019)")
            figures.append(p)
    scaling = batch_scaling.scaling_rows(rows)
    for task in sorted({k[0] for k in scaling}):
        p = out / f"{task}_steps_vs_batch.png"
        _scaling_figure({k: v for k, v in scaling.items() if k[0] == task}, task, p)
        captions[p.name] = (f"{task}: median steps to target against batch size (log-log), each batch size tuned; "
                            f"dotted: ideal linear scaling from the smallest batch; a ring: the critical batch size "
                            f"(the largest within {batch_scaling.THRESHOLD:.0%} of ideal scaling)")
        figures.append(p)
    if len({r.task for r in rows if r.reached}) >= 2:
        p = out / "performance_profile.png"
        _profile_figure(rows, p)
        captions[p.name] = ("performance profile: the fraction of tasks on which each method reaches the target "
                            "within tau times the fastest method's time")
        figures.append(p)
    verdicts = None
    if claims is not None:
        from curvbench.report import claims as claims_mod

        verdicts = claims_mod.evaluate(claims, settings_of(rows))
    generated = dt.datetime.now().isoformat(timespec="seconds")
    notes = [
        "A row holds runs that differ only in their seed: the same entry, hyperparameters, training settings and "
        "protocol; where runs of one entry differ, the label names what differs (lr=10) and runs stopped at a "
        "target say so with the recipe they came from ([to-target >= 0.985, mnist]).",
        "Metric columns: the task's metric (accuracy, or F1 where the recipe says so), mean over seeds. Times: "
        "training seconds only (evaluation excluded); s/epoch over whole epochs only.",
        "Time, epochs and steps to target: " + _explanation(baseline),
        "(busy: k/n) after a time: k of the row's n runs were timed while other processes used the cores their "
        "threads needed (the `timing` tag); such times are not comparable with quiet ones.",
        "With its search: the median seconds to target plus every training second of the search (all its trials) "
        "that chose the row's hyperparameters, when that search is in the report.",
        "A search (`tune`) is shown by its best trial. Step time / SGD: training seconds per step (seconds / steps) "
        "against SGD's, runs of one kind (searches with searches).",
    ]
    search_note = ("Best score: the best validation value of the metric over the epochs of a trial, the median over "
                   "its seeds when each trial ran several (`tune --seeds N`). Expected best after k trials: the mean "
                   "of the best score over every k-subset of the search's trials (Dodge et al. 2019, exact), so that "
                   "searches of different sizes compare at equal budgets. Search s: training seconds of all its "
                   "trials.")
    md = ["# curvbench report", "", f"{n_read} runs; generated {generated}.", "", *notes, "", markdown_table(rows)]
    if found:
        md += ["## Searches", "", search_note, "", search_table(found)]
    if verdicts is not None:
        from curvbench.report import claims as claims_mod

        md += ["## Claims", "", CLAIMS_NOTE, "", claims_mod.markdown(verdicts)]
    if scaling:
        md += ["## Steps to target against batch size", "", SCALING_NOTE, "", scaling_table(scaling)]
    for p in figures:
        md += [f"![{captions[p.name]}]({p.name})", "", f"*{captions[p.name]}*", ""]
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "report.html").write_text(_html(rows, figures, n_read, found, captions, notes, search_note, generated,
                                           verdicts))
    return rows, figures


SCALING_NOTE = ("scale-batch's runs: per method and batch size, the median steps (and training seconds) to target "
                "over seeds with that batch size's tuned setting; the critical batch size is the largest measured "
                "batch whose steps stay within 20% of ideal linear scaling from the smallest batch, at it and every "
                "smaller one (>= when every measured batch still scaled).")


def scaling_table(scaling: dict) -> str:
    import math

    lines = ["| task | recipe | method | steps to target by batch size | critical batch | steps at it | "
             "fastest in seconds |", "|---|---|---|---|---|---|---|"]
    for (task, recipe, entry), by_batch in sorted(scaling.items()):
        crit = batch_scaling.critical_batch({b: st.median for b, (st, _) in by_batch.items()})
        steps = ", ".join(f"{b}: {'not reached' if math.isinf(st.median) else f'{st.median:.0f}'}"
                          for b, (st, _) in sorted(by_batch.items()))
        timed = [(tt.median, b) for b, (_, tt) in by_batch.items() if tt is not None and math.isfinite(tt.median)]
        fastest = f"{min(timed)[0]:.1f} s at {min(timed)[1]}" if timed else "not reached"
        at = "-" if crit.steps is None else f"{crit.steps:.0f}"
        lines.append(f"| {task} | {recipe} | {entry} | {steps} | {crit.text()} | {at} | {fastest} |")
    return "\n".join(lines) + "\n"


def _scaling_figure(scaling: dict, task, path) -> None:
    import math

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, ((_, recipe, entry), by_batch) in enumerate(sorted(scaling.items())):
        medians = {b: st.median for b, (st, _) in by_batch.items()}
        shown = sorted(b for b, m in medians.items() if math.isfinite(m))
        if not shown:
            continue
        color = f"C{i % 10}"
        ax.plot(shown, [medians[b] for b in shown], marker="o", color=color, label=entry)
        crit = batch_scaling.critical_batch(medians)
        if crit.ideal:
            ideal = sorted(crit.ideal)
            ax.plot(ideal, [crit.ideal[b] for b in ideal], ls=":", color=color)
        if crit.batch is not None:
            ax.plot([crit.batch], [crit.steps], marker="o", ms=14, mfc="none", color=color)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("steps to target (median over seeds)")
    ax.set_title(f"{task}: steps to target against batch size")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CLAIMS_NOTE = ("Each claim judged on each setting that ran it (a recipe's to-target runs on the task): confirmed or "
               "refuted by one-sided Mann-Whitney tests at the 5% level (fastest and slowest: every pair must agree "
               "to confirm; one pair against, at 5% over the number of pairs, refutes), about-equal claims by the "
               "speed-up's 95% interval against the tolerance, at-most claims by the median's interval; inconclusive "
               "otherwise. Missing runs and tasks not run are said, never guessed.")


def _explanation(baseline: str) -> str:
    return stats.EXPLANATION.replace("Against the baseline:", f"Against the baseline ({baseline}, within the same task, "
                                                        f"recipe and target):")


def _time_curve_figure(runs, task, key, ylabel, path) -> str:
    """The metric against cumulative training seconds: per label the mean over seeds of both at each epoch, the
    band the min-max of the metric over seeds."""
    import matplotlib.pyplot as plt

    by_label: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for r in runs:
        if r.task == task and r.curves.get(key) and r.curves.get(record.TRAIN_SECONDS):
            by_label[r.label or r.entry].append((dict(r.curves[key]), dict(r.curves[record.TRAIN_SECONDS])))
    fig, ax = plt.subplots(figsize=(6.5 if len(by_label) <= 5 else 8.5, 4))
    banded = False
    for label, seeds in sorted(by_label.items()):
        epochs = sorted(set().union(*[set(m) & set(t) for m, t in seeds]))
        xs = [statistics.fmean([t[e] for _, t in seeds if e in t]) for e in epochs]
        vals = [[m[e] for m, t in seeds if e in m and e in t] for e in epochs]
        line, = ax.plot(xs, [statistics.fmean(v) for v in vals], marker="o", ms=3, label=label)
        if len(seeds) > 1:
            banded = True
            ax.fill_between(xs, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2, color=line.get_color())
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{task}: {ylabel} against training time")
    ax.grid(alpha=0.3)
    if ax.lines:
        _legend(ax, len(by_label))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"{task}: {ylabel} against training seconds at each epoch's end, mean over seeds"
            + (f"; {BAND}" if banded else ""))


def _interval_bars(labels, values: list, ylabel, title, path) -> None:
    """Bars at the censored medians, whiskers at their intervals; a median not reached is a hatched bar, an
    interval whose upper end is not reached an arrow."""
    import math

    import matplotlib.pyplot as plt

    finite = [x for c in values if c is not None for x in c.values if math.isfinite(x)]
    top = max(finite or [1.0]) * 1.1
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) + 2.5), 4.5))
    for i, c in enumerate(values):
        m = c.median if c is not None else math.inf
        reached = math.isfinite(m)
        bar = ax.bar(i, m if reached else top, color=f"C{i % 10}" if reached else "#bbbbbb",
                     hatch=None if reached else "//")[0]
        ci = c.interval() if c is not None else None
        if ci is not None and reached:
            hi = ci.high if math.isfinite(ci.high) else top
            ax.errorbar(i, m, yerr=[[m - ci.low], [hi - m]], color="black", capsize=4)
            if not math.isfinite(ci.high):
                ax.annotate("", xy=(i, top * 1.04), xytext=(i, top * 0.96), arrowprops=dict(arrowstyle="->"))
        if not reached:
            ax.text(bar.get_x() + bar.get_width() / 2, top, "not reached", ha="center", va="bottom", fontsize=8)
        if c is not None:
            ax.text(i, 0, f"{c.reached}/{c.n}", ha="center", va="bottom", fontsize=8, color="white" if reached else "k")
    wide = len(labels) > 2 or max(map(len, labels)) > 12
    ax.set_xticks(range(len(labels)), labels, rotation=30 if wide else 0, ha="right" if wide else "center",
                  fontsize="small")
    ax.set_ylim(0, top * 1.12)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _expected_best_figure(found: list[Search], task, path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for s in found:
        e = s.expected_best()
        ax.plot(range(1, len(e) + 1), e, marker="o", ms=3, label=f"{s.entry} ({s.study})")
    ax.set_xlabel("trials k")
    ax.set_ylabel("expected best validation score")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{task}: expected best score after k trials")
    ax.grid(alpha=0.3)
    _legend(ax, len(found))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html(rows, figures, n, found=(), captions=None, notes=(), search_note="", generated="", verdicts=None) -> str:
    import html

    def table_html(head, body) -> str:
        return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>" for cells in body)
                + "</table>")

    captions = captions or {}
    parts = [table_html(COLUMNS, [row_cells(r) for r in rows])]
    if found:
        parts.append(f"<h2>Searches</h2><p>{html.escape(search_note)}</p>")
        parts.append(table_html(("task", "method", "study", "trials", "seeds per score", "best score", "best trial",
                                 "its hyperparameters", "search s", "expected best after k trials"),
                                [[s.task, s.entry, s.study, s.n_trials, len(s.best_runs), s.score_text(), s.best.trial,
                                  s.chosen(), f"{s.seconds:.0f}", _expected_text(s)] for s in found]))
    if verdicts is not None:
        parts.append(f"<h2>Claims</h2><p>{html.escape(CLAIMS_NOTE)}</p>")
        parts.append(table_html(("claim", "task", "setting", "verdict", "evidence"),
                                [[v.claim.text, v.claim.task, v.setting, v.outcome, v.evidence] for v in verdicts]))
    imgs = [f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
            f'alt="{html.escape(captions.get(p.name, p.stem))}"><figcaption>{html.escape(captions.get(p.name, p.stem))}'
            f'</figcaption></figure>' for p in figures]
    intro = "".join(f"<p>{html.escape(t)}</p>" for t in notes)
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(2),th:nth-child(2)"
             "{text-align:left}figure{display:inline-block;margin:1em;vertical-align:top;max-width:46%}"
             "figure img{max-width:100%}figcaption{font-size:0.85em;color:#444}p{max-width:60em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>curvbench report</title><style>{style}</style>"
            f"</head><body><h1>curvbench report</h1><p>{n} runs; generated {html.escape(generated)}.</p>{intro}"
            f"{''.join(parts)}{''.join(imgs)}</body></html>\n")


def log_report(tracker, out: Path, figures: list[Path], selection: dict) -> str:
    run = tracker.start(record.REPORTS_EXPERIMENT, f"report-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}",
                        {k: v for k, v in selection.items() if v}, {record.KIND: record.REPORT})
    for p in [out / "report.md", out / "report.html", *figures]:
        run.log_file(str(p))
    run.end("FINISHED")
    return run.run_id
