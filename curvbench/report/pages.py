"""Reports from the MLflow store: the thesis's figures (accuracy, test and train loss against epochs with a band
over seeds, training time, time and epochs to target) and an AlgoPerf-style performance profile; tables of
best and final accuracy, seconds per epoch, total time, time and epochs to target and step time relative to SGD.
Written as PNGs, report.md and one self-contained report.html, and logged as artifacts of a report run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import NamedTuple

from curvbench import record
from curvbench.errors import CurvbenchError
from curvbench.report import batch_scaling
from curvbench.report.collect import RunData, compared, epoch_metrics_of, left_out_note, searches
from curvbench.report.figures import (
    bar_figure,
    curve_figure,
    epoch_metrics_figure,
    expected_best_figure,
    interval_bars,
    profile_figure,
    scaling_figure,
    time_curve_figure,
)
from curvbench.report.html import html_page
from curvbench.report.summary import Row, link_searches, price_steps, settings_of, summarise
from curvbench.report.tables import (
    CLAIMS_NOTE,
    SCALING_NOTE,
    SEARCH_NOTE,
    markdown_table,
    quiet_note,
    report_notes,
    scaling_table,
    search_table,
)


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


class Written(NamedTuple):
    """What write_report wrote, for the command to print without computing it again."""

    rows: list[Row]
    figures: list[Path]
    searches: list  # summary.Search, one per tune study read
    verdicts: list | None  # claims.Verdict per claim and setting; None without claims


def write_report(runs: list[RunData], out: Path, claims=None, baseline: str = "sgd", step_costs=()) -> Written:
    """The report into `out`: report.md, report.html and the figures; with `claims` (a list of claims.Claim) a
    section judging each claim; with `step_costs` (step_costs.StepCosts) quiet seconds to target for the rows they
    price."""
    import matplotlib

    matplotlib.use("Agg")
    n_read, runs_read = len(runs), runs
    found = searches(runs)
    runs = compared(runs, found)
    rows = summarise(runs, baseline)
    price_steps(rows, list(step_costs), baseline)
    link_searches(rows, found)
    out.mkdir(parents=True, exist_ok=True)
    captions: dict[Path, str] = {}
    for task in sorted({r.task for r in runs}):
        captions |= task_figures(task, [r for r in runs if r.task == task], [r for r in rows if r.task == task],
                                 [f for f in found if f.task == task and f.scores], out)
    scaling = batch_scaling.scaling_rows(rows)
    captions |= overall_figures(rows, scaling, out)
    verdicts = None
    if claims is not None:
        from curvbench.report import claims as claims_mod

        verdicts = claims_mod.evaluate(claims, settings_of(rows))
    generated = dt.datetime.now().isoformat(timespec="seconds")
    figures = list(captions)
    notes = report_notes(baseline)
    left = left_out_note(runs_read)
    if left:
        notes = [left, *notes]
    quiet = quiet_note(rows)
    if quiet:
        notes = [*notes, quiet]
    md = ["# curvbench report", "", f"{n_read} runs; generated {generated}.", "", *notes, "", markdown_table(rows)]
    if found:
        md += ["## Searches", "", SEARCH_NOTE, "", search_table(found)]
    if verdicts is not None:
        from curvbench.report import claims as claims_mod

        md += ["## Claims", "", CLAIMS_NOTE, "", claims_mod.markdown(verdicts)]
    if scaling:
        md += ["## Steps to target against batch size", "", SCALING_NOTE, "", scaling_table(scaling, found)]
    for p, caption in captions.items():
        md += [f"![{caption}]({p.name})", "", f"*{caption}*", ""]
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "report.html").write_text(html_page(rows, figures, n_read, found, {p.name: c for p, c in captions.items()},
                                               notes, SEARCH_NOTE, generated, verdicts))
    return Written(rows, figures, found, verdicts)


def epochs_trained(runs: list[RunData], rows: list[Row]) -> dict[str, float]:
    """Per row, the mean number of epochs its runs trained (their logged epochs)."""
    import statistics

    out = {}
    for row in rows:
        counts = [len(r.curve(record.TRAIN_LOSS)) for r in runs if (r.label or r.entry) == row.entry]
        out[row.entry] = statistics.mean(counts) if counts else 0.0
    return out


def task_figures(task: str, runs: list[RunData], rows: list[Row], found: list, out: Path) -> dict[Path, str]:
    """One task's figures, drawn into `out`, with their captions: its metric's curves against epochs and
    seconds, the losses, what adaptive K-FAC chose, training time, time and epochs to target, expected best."""
    drawn: dict[Path, str] = {}
    metric = runs[0].metric  # the recipe's task.metric: accuracy, f1, ...
    key = record.split_metric("test", metric)
    curves = ((key, f"test {metric}"), (record.split_metric("test", "loss"), "test loss"),
              (record.TRAIN_LOSS, "train loss"))
    for curve, label in curves:
        if any(r.curves.get(curve) for r in runs):
            p = out / f"{task}_{curve}.png"
            drawn[p] = curve_figure(runs, task, curve, label, p)
    if any(r.curves.get(key) and r.curves.get(record.TRAIN_SECONDS) for r in runs):
        p = out / f"{task}_{key}_seconds.png"
        drawn[p] = time_curve_figure(runs, task, key, f"test {metric}", p)
    for method in sorted({r.method for r in runs}):  # what each method declares it reports per epoch
        metrics = epoch_metrics_of(method)
        if metrics and any(r.curves.get(m.key) for r in runs if r.method == method for m in metrics):
            p = out / f"{task}_{method}_per_epoch.png"
            drawn[p] = epoch_metrics_figure(runs, task, method, metrics, p)
    p = out / f"{task}_train_time.png"
    epochs = epochs_trained(runs, rows)
    differ = len(set(epochs.values())) > 1
    names = [f"{r.entry} ({epochs[r.entry]:g} ep)" if differ else r.entry for r in rows]
    bar_figure(names, [r.total for r in rows], [(0, 0) for _ in rows],
               "training seconds", f"{task}: training time (evaluation excluded)", p)
    drawn[p] = f"{task}: total training seconds per configuration, mean over seeds (evaluation excluded)" + (
        "; the configurations trained for different numbers of epochs (in the labels: a to-target run stops at "
        "its target), so compare the table's s/epoch, not these bars" if differ else "")
    aimed = [r for r in rows if r.reached]
    for attr, label, name in (("ttt", "seconds to target", "time_to_target"),
                              ("ett", "epochs to target", "epochs_to_target")):
        if not aimed:
            break
        p = out / f"{task}_{name}.png"
        interval_bars([r.entry for r in aimed], [getattr(r, attr) for r in aimed], label,
                      f"{task}: {label} (median over all seeds, interval)", p)
        drawn[p] = (f"{task}: {label}, median over all seeds (a seed that missed counts as not reached), whiskers "
                    f"its order-statistic interval; hatched: median not reached; an arrow: the interval's upper end "
                    f"is not reached")
    if found:
        p = out / f"{task}_expected_best.png"
        expected_best_figure(found, task, p)
        drawn[p] = (f"{task}: expected best validation score after k trials of each search (k-subsets of its "
                    f"trials, Dodge et al. 2019)")
    return drawn


def overall_figures(rows: list[Row], scaling: dict, out: Path) -> dict[Path, str]:
    """Figures across runs of several batch sizes or tasks: steps against batch size, the performance profile."""
    drawn: dict[Path, str] = {}
    for task in sorted({k[0] for k in scaling}):
        p = out / f"{task}_steps_vs_batch.png"
        scaling_figure({k: v for k, v in scaling.items() if k[0] == task}, task, p)
        drawn[p] = (f"{task}: median steps to target against batch size (log-log), each batch size tuned; dotted: "
                    f"ideal linear scaling from the smallest batch; a ring: the critical batch size (the largest "
                    f"within {batch_scaling.THRESHOLD:.0%} of ideal scaling); an x on the top line: not reached at that batch "
                    f"size by half or more of the seeds")
    if len({r.task for r in rows if r.reached}) >= 2:
        p = out / "performance_profile.png"
        profile_figure(rows, p)
        drawn[p] = ("performance profile: the fraction of tasks on which each method reaches the target within tau "
                    "times the fastest method's time")
    return drawn


def log_report(tracker, out: Path, figures: list[Path], selection: dict) -> str:
    run = tracker.start(record.REPORTS_EXPERIMENT, f"report-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}",
                        {k: v for k, v in selection.items() if v}, {record.KIND: record.REPORT})
    for p in [out / "report.md", out / "report.html", *figures]:
        run.log_file(str(p))
    run.end("FINISHED")
    return run.run_id
