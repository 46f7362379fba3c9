"""Reports from the MLflow store: the thesis's figures (accuracy, test and train loss against epochs with a band
over seeds, training time, time and epochs to target) and an AlgoPerf-style performance profile; tables of
best and final accuracy, seconds per epoch, total time, time and epochs to target and step time relative to SGD.
Written as PNGs, report.md and one self-contained report.html, and logged as artifacts of a report run."""

from __future__ import annotations

import base64
import re
import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from curvbench.errors import CurvbenchError
from curvbench import record

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

    def chosen(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.varied.items()) or "-"

    def score_text(self) -> str:
        split = "val" if self.best.curve(record.split_metric("val", self.best.metric)) else "test"
        return f"{self.best_score:.4f} ({split})"


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
        protocol = f"to-target >= {tags[record.TARGET]}" if to_target else "train"
        data = RunData(r.info.run_id, tags.get(record.TASK, "?"), entry, tags.get(record.SEED, "0"), r.info.status,
                       r.data.params.get("training.batch_size", "?"), metrics=dict(r.data.metrics),
                       target_reached=tags.get(record.TARGET_REACHED),
                       metric=r.data.params.get("task.metric", "accuracy"), method=tags.get(record.METHOD, entry),
                       study=tags.get(record.STUDY, "?") if trial else None,
                       trial=int(tags.get(record.TRIAL, -1)) if trial else None, params=dict(r.data.params),
                       protocol=protocol, outcome=tags.get(record.OUTCOME))
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
        out.append(Search(task, best.entry, study, runs, best, varied, best_runs, len(by_trial), scores[best_trial]))
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
            parts = [f"{_short(k)}={dicts[c].get(k, '-')}" for k in varied]
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
    ttt: tuple | None  # (median, min, max) seconds to target over seeds that reached it
    ett: tuple | None
    reached: str  # "2/3", or "" when no run aimed at a target
    ratio_sgd: float | None
    metric: str = "accuracy"
    method: str = "?"
    tuned: bool = False  # the best trial of a search, not a run of its own
    sec_per_step: float | None = None  # training seconds / steps, mean over the runs
    failed: int = 0  # runs of the row that diverged
    errors: int = 0  # runs of the row that ended by an error (no outcome): their curves, if any, are cut short


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _stat(xs):
    return (statistics.median(xs), min(xs), max(xs)) if xs else None


def _sec_per_step(r: RunData) -> float | None:
    secs, steps = r.curve(record.TRAIN_SECONDS), r.curve(record.STEPS)
    return secs[-1] / steps[-1] if secs and steps and steps[-1] else None


def summarise(runs: list[RunData]) -> list[Row]:
    """One row per task and configuration (label): every number in a row comes from runs that differ only in
    their seed."""
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
        aimed = [r for r in rs if r.target_reached is not None]
        hit = [r for r in aimed if r.target_reached == "true" and record.TIME_TO_TARGET in r.metrics]
        rows.append(Row(task, entry, len(rs), best, final, spe, total,
                        _stat([r.metrics[record.TIME_TO_TARGET] for r in hit]),
                        _stat([r.metrics[record.EPOCHS_TO_TARGET] for r in hit]),
                        f"{len(hit)}/{len(aimed)}" if aimed else "", None, metric, rs[0].method,
                        rs[0].study is not None, _mean([_sec_per_step(r) for r in rs]),
                        sum(r.status == "FAILED" and r.outcome == "diverged" for r in rs),
                        sum(r.status == "FAILED" and r.outcome is None for r in rs)))
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
    return rows


def _f(x, fmt="{:.4f}"):
    return "-" if x is None else fmt.format(x)


def _ft(st, fmt="{:.2f}"):
    return "not reached" if st is None else f"{fmt.format(st[0])} [{fmt.format(st[1])}, {fmt.format(st[2])}]"


def _runs(r: Row) -> str:
    notes = ([f"{r.failed} diverged"] if r.failed else []) + ([f"{r.errors} failed by an error"] if r.errors else [])
    return f"{r.runs} ({', '.join(notes)})" if notes else str(r.runs)


def markdown_table(rows: list[Row]) -> str:
    head = ("| task | method | runs | best test acc | final test acc | s/epoch | total train s | "
            "time to target s | epochs to target | step time / SGD |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        ttt = _ft(r.ttt) if r.reached else "-"
        ett = _ft(r.ett) if r.reached else "-"
        if r.reached:
            ttt += f" ({r.reached})"
        lines.append(f"| {r.task} | {r.entry} | {_runs(r)} | {_f(r.best)} | {_f(r.final)} | {_f(r.sec_per_epoch, '{:.2f}')} | "
                     f"{_f(r.total, '{:.1f}')} | {ttt} | {ett} | {_f(r.ratio_sgd, '{:.2f}')} |")
    return "\n".join(lines) + "\n"


def search_table(found: list[Search]) -> str:
    lines = ["| task | method | study | trials | seeds per score | best score | best trial | its hyperparameters |",
             "|" + "---|" * 8]
    for s in found:
        lines.append(f"| {s.task} | {s.entry} | {s.study} | {s.n_trials} | {len(s.best_runs)} | {s.score_text()} | "
                     f"{s.best.trial} | {s.chosen()} |")
    return "\n".join(lines) + "\n"


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
    import matplotlib.pyplot as plt

    times: dict[str, dict[str, float | None]] = defaultdict(dict)
    for r in rows:
        if r.reached:
            times[r.task][r.entry] = r.ttt[0] if r.ttt else None
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


def write_report(runs: list[RunData], out: Path) -> tuple[list[Row], list[Path]]:
    import matplotlib

    matplotlib.use("Agg")
    n_read = len(runs)
    found = searches(runs)
    runs = compared(runs, found)
    rows = summarise(runs)
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
                st = [getattr(r, attr) for r in aimed]
                errs = [(s[0] - s[1], s[2] - s[0]) if s else (0, 0) for s in st]
                p = out / f"{task}_{name}.png"
                _bar_figure([r.entry for r in aimed], [s[0] if s else None for s in st], errs,
                            label, f"{task}: {label} (median, min-max over seeds)", p)
                captions[p.name] = (f"{task}: {label}, median over the seeds that reached the target, whiskers min to "
                                    f"max; hatched: not reached")
                figures.append(p)
    if len({r.task for r in rows if r.reached}) >= 2:
        p = out / "performance_profile.png"
        _profile_figure(rows, p)
        captions[p.name] = ("performance profile: the fraction of tasks on which each method reaches the target "
                            "within tau times the fastest method's time")
        figures.append(p)
    generated = dt.datetime.now().isoformat(timespec="seconds")
    notes = [
        "A row holds runs that differ only in their seed: the same entry, hyperparameters, training settings and "
        "protocol; where runs of one entry differ, the label names what differs (lr=10) and runs stopped at a "
        "target say so ([to-target >= 0.985]).",
        "Accuracy columns: mean over seeds. Times: training seconds only (evaluation excluded); s/epoch over whole "
        "epochs only. Time and epochs to target: median [min, max] over the seeds that reached it, (reached/runs).",
        "A search (`tune`) is shown by its best trial. Step time / SGD: training seconds per step (seconds / steps) "
        "against SGD's, runs of one kind (searches with searches).",
    ]
    search_note = ("Best score: the best validation value of the metric over the epochs of a trial, the median over "
                   "its seeds when each trial ran several (`tune --seeds N`).")
    md = ["# curvbench report", "", f"{n_read} runs; generated {generated}.", "", *notes, "", markdown_table(rows)]
    if found:
        md += ["## Searches", "", search_note, "", search_table(found)]
    for p in figures:
        md += [f"![{captions[p.name]}]({p.name})", "", f"*{captions[p.name]}*", ""]
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "report.html").write_text(_html(rows, figures, n_read, found, captions, notes, search_note, generated))
    return rows, figures


def _html(rows, figures, n, found=(), captions=None, notes=(), search_note="", generated="") -> str:
    import html

    captions = captions or {}
    table = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in (
        "task", "method", "runs", "best test acc", "final test acc", "s/epoch", "total train s", "time to target s",
        "epochs to target", "step time / SGD")) + "</tr>"]
    for r in rows:
        cells = [r.task, r.entry, _runs(r), _f(r.best), _f(r.final), _f(r.sec_per_epoch, "{:.2f}"), _f(r.total, "{:.1f}"),
                 (_ft(r.ttt) + f" ({r.reached})") if r.reached else "-", _ft(r.ett) if r.reached else "-",
                 _f(r.ratio_sgd, "{:.2f}")]
        table.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    table.append("</table>")
    if found:
        table.append(f"<h2>Searches</h2><p>{html.escape(search_note)}</p><table><tr>" + "".join(f"<th>{h}</th>" for h in (
            "task", "method", "study", "trials", "seeds per score", "best score", "best trial",
            "its hyperparameters")) + "</tr>")
        for s in found:
            cells = [s.task, s.entry, s.study, s.n_trials, len(s.best_runs), s.score_text(), s.best.trial, s.chosen()]
            table.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        table.append("</table>")
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
            f"{''.join(table)}{''.join(imgs)}</body></html>\n")


def log_report(tracker, out: Path, figures: list[Path], selection: dict) -> str:
    run = tracker.start(record.REPORTS_EXPERIMENT, f"report-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}",
                        {k: v for k, v in selection.items() if v}, {record.KIND: record.REPORT})
    for p in [out / "report.md", out / "report.html", *figures]:
        run.log_file(str(p))
    run.end("FINISHED")
    return run.run_id
