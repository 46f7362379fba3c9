"""Reports from the MLflow store: the thesis's figures (accuracy, test and train loss against epochs with a band
over seeds, training time, time and epochs to target) and an AlgoPerf-style performance profile; tables of
best and final accuracy, seconds per epoch, total time, time and epochs to target and step time relative to SGD.
Written as PNGs, report.md and one self-contained report.html, and logged as artifacts of a report run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from curvbench import record
from curvbench.errors import CurvbenchError
from curvbench.report import batch_scaling
from curvbench.report.collect import RunData, compared, searches
from curvbench.report.figures import (
    adaptation_figure,
    bar_figure,
    curve_figure,
    expected_best_figure,
    interval_bars,
    profile_figure,
    scaling_figure,
    time_curve_figure,
)
from curvbench.report.html import html_page
from curvbench.report.summary import Row, link_searches, settings_of, summarise
from curvbench.report.tables import CLAIMS_NOTE, SCALING_NOTE, explanation, markdown_table, scaling_table, search_table


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
        metric = next(r.metric for r in runs if r.task == task)  # the recipe's task.metric: accuracy, f1, ...
        key = record.split_metric("test", metric)
        curves = ((key, f"test {metric}"), (record.split_metric("test", "loss"), "test loss"),
                  (record.TRAIN_LOSS, "train loss"))
        for curve, label in curves:
            if any(r.curves.get(curve) for r in runs if r.task == task):
                p = out / f"{task}_{curve}.png"
                captions[p.name] = curve_figure(runs, task, curve, label, p)
                figures.append(p)
        if any(r.curves.get(key) and r.curves.get(record.TRAIN_SECONDS) for r in runs if r.task == task):
            p = out / f"{task}_{key}_seconds.png"
            captions[p.name] = time_curve_figure(runs, task, key, f"test {metric}", p)
            figures.append(p)
        if any(r.curves.get(record.KFAC_DAMPING) for r in runs if r.task == task):
            p = out / f"{task}_kfac_adaptation.png"
            captions[p.name] = adaptation_figure(runs, task, p)
            figures.append(p)
        trows = [r for r in rows if r.task == task]
        p = out / f"{task}_train_time.png"
        bar_figure([r.entry for r in trows], [r.total for r in trows], [(0, 0) for _ in trows],
                    "training seconds", f"{task}: training time (evaluation excluded)", p)
        captions[p.name] = f"{task}: total training seconds per configuration, mean over seeds (evaluation excluded)"
        figures.append(p)
        aimed = [r for r in trows if r.reached]
        if aimed:
            for attr, label, name in (("ttt", "seconds to target", "time_to_target"),
                                      ("ett", "epochs to target", "epochs_to_target")):
                p = out / f"{task}_{name}.png"
                interval_bars([r.entry for r in aimed], [getattr(r, attr) for r in aimed], label,
                               f"{task}: {label} (median over all seeds, interval)", p)
                captions[p.name] = (f"{task}: {label}, median over all seeds (a seed that missed counts as not "
                                    f"reached), whiskers its order-statistic interval; hatched: median not reached; "
                                    f"an arrow: the interval's upper end is not reached")
                figures.append(p)
        tfound = [f for f in found if f.task == task and f.scores]
        if tfound:
            p = out / f"{task}_expected_best.png"
            expected_best_figure(tfound, task, p)
            captions[p.name] = (f"{task}: expected best validation score after k trials of each search (k-subsets "
                                f"of its trials, Dodge et al. 2019)")
            figures.append(p)
    scaling = batch_scaling.scaling_rows(rows)
    for task in sorted({k[0] for k in scaling}):
        p = out / f"{task}_steps_vs_batch.png"
        scaling_figure({k: v for k, v in scaling.items() if k[0] == task}, task, p)
        captions[p.name] = (f"{task}: median steps to target against batch size (log-log), each batch size tuned; "
                            f"dotted: ideal linear scaling from the smallest batch; a ring: the critical batch size "
                            f"(the largest within {batch_scaling.THRESHOLD:.0%} of ideal scaling)")
        figures.append(p)
    if len({r.task for r in rows if r.reached}) >= 2:
        p = out / "performance_profile.png"
        profile_figure(rows, p)
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
        "Time, epochs and steps to target: " + explanation(baseline),
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
    (out / "report.html").write_text(html_page(rows, figures, n_read, found, captions, notes, search_note, generated,
                                           verdicts))
    return rows, figures


def log_report(tracker, out: Path, figures: list[Path], selection: dict) -> str:
    run = tracker.start(record.REPORTS_EXPERIMENT, f"report-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}",
                        {k: v for k, v in selection.items() if v}, {record.KIND: record.REPORT})
    for p in [out / "report.md", out / "report.html", *figures]:
        run.log_file(str(p))
    run.end("FINISHED")
    return run.run_id
