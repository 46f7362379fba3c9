"""The report's figures, drawn with matplotlib (Agg) and saved as PNG: curves against epochs and seconds with a
band over seeds, bars with intervals, the performance profile, expected best after k trials, batch scaling, and
the hyperparameters adaptive K-FAC chose."""

from __future__ import annotations

import statistics
from collections import defaultdict

from matplotlib.ticker import MaxNLocator

from curvbench import record
from curvbench.report import batch_scaling
from curvbench.report.collect import Search
from curvbench.report.summary import profile_values

# ------------------------------------------------------------------------------------------------- figures
BAND = "band: min to max over seeds"
DPI = 110  # sharp in the HTML page at its width, small enough to inline eight of them


def set_epoch_axis(ax) -> None:
    """Epochs on the x axis, ticked at whole epochs only (a short run otherwise gets ticks at 1.2, 1.4)."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save(fig, path) -> None:
    """Lay out, write as PNG and free the figure: every figure ends here."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _legend(ax, n: int) -> None:
    """Inside the axes for a few lines, beside them for many: a legend never hides ten curves."""
    if n > 5:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title_fontsize="small")
    else:
        ax.legend(fontsize="small")


def curve_figure(runs, task, key, ylabel, path) -> str:
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
    set_epoch_axis(ax)
    ax.set_ylabel(ylabel + (" (log scale)" if loss else ""))
    ax.set_title(f"{task}: {ylabel}")
    ax.grid(alpha=0.3, which="both" if loss else "major")
    if ax.lines:
        _legend(ax, len(by_entry))
    save(fig, path)
    caption = f"{task}: {ylabel} per epoch, mean over seeds" + (f"; {BAND}" if banded else "")
    if left_out or never_drawn:
        caption += f"; left out (diverged): {', '.join(left_out + never_drawn)}"
    if diverged - set(left_out) - set(never_drawn):
        caption += "; dashed with an x: diverged runs, up to their last epoch"
    return caption


def epoch_metrics_figure(runs, task, method: str, metrics, path) -> str:
    """What `method` reports per epoch (MethodSpec.epoch_metrics: adaptive K-FAC's damping, gamma, step size and
    momentum), mean over seeds per label, on a log axis (absolute values); a metric that is 0 throughout (a
    momentum turned off) is left out."""
    import matplotlib.pyplot as plt

    by_label: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.task == task and r.method == method:
            for m in metrics:
                if r.curves.get(m.key):
                    by_label[r.label or r.entry][m.key].append(dict(r.curves[m.key]))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, curves) in enumerate(sorted(by_label.items())):
        for m in metrics:
            seeds = curves.get(m.key)
            if not seeds:
                continue
            epochs = sorted(set().union(*seeds))
            mean = [statistics.fmean([c[e] for c in seeds if e in c]) for e in epochs]
            if not any(mean):
                continue
            ax.plot(epochs, [abs(v) for v in mean], ls=m.style, color=f"C{i}", marker="o", ms=3,
                    label=f"{label}: {m.label}")
    ax.set_yscale("log")
    set_epoch_axis(ax)
    ax.set_ylabel("value (log scale)")
    names = ", ".join(m.label for m in metrics)
    ax.set_title(f"{task}: {method}'s {names} per epoch")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, len(ax.lines))
    save(fig, path)
    styles = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}
    return (f"{task}: what {method} reports per epoch, mean over seeds: " +
            ", ".join(f"{m.label} ({styles.get(m.style, m.style)})" for m in metrics))


def bar_figure(labels, values, errs, ylabel, title, path, missing=()):
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
    save(fig, path)


def profile_figure(rows, path):
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
    save(fig, path)
    return profile_values(times, tasks, entries)


def scaling_figure(scaling: dict, task, path) -> dict:
    """Median steps to target against batch size per method; a batch size at which the median seed did not reach
    the target is an x on the figure's top edge, joined by a dashed line, so that it is seen, not left out (a
    method that missed everywhere is its x marks alone). Where several methods missed at one batch size their x
    marks are spread sideways, each in its colour. Returns what it drew: {entry: {batch: (x, y, reached)}}."""
    import math
    from collections import Counter

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn: dict = {}
    finite = [p.steps.median for by_batch in scaling.values() for p in by_batch.values()
              if math.isfinite(p.steps.median)]
    top = max(finite) * 1.8 if finite else 1.0  # where "not reached" is drawn
    missing_at = Counter(b for by_batch in scaling.values() for b, p in by_batch.items()
                         if not math.isfinite(p.steps.median))
    placed: Counter = Counter()
    for i, ((_, recipe, entry), by_batch) in enumerate(sorted(scaling.items())):
        medians = {b: p.steps.median for b, p in by_batch.items()}
        shown = sorted(b for b, m in medians.items() if math.isfinite(m))
        missed = sorted(b for b, m in medians.items() if not math.isfinite(m))
        color = f"C{i % 10}"
        if shown:
            ax.plot(shown, [medians[b] for b in shown], marker="o", color=color, label=entry)
        drawn[entry] = {b: (b, medians[b], True) for b in shown}
        for b in missed:
            # the k-th of n marks at b, spread by 2^(0.14 k) around it (a seventh of an octave: still read as b)
            x = b * 2 ** (0.14 * (placed[b] - (missing_at[b] - 1) / 2))
            placed[b] += 1
            drawn[entry][b] = (x, top, False)
            before = [s for s in shown if s < b]
            if before:
                ax.plot([before[-1], x], [medians[before[-1]], top], ls="--", color=color, alpha=0.6)
            ax.plot([x], [top], marker="x", ms=9, mew=2, color=color, clip_on=False,
                    label=None if shown or b != missed[0] else f"{entry} (not reached)")
        crit = batch_scaling.critical_batch(medians)
        if crit.ideal:
            ideal = sorted(crit.ideal)
            ax.plot(ideal, [crit.ideal[b] for b in ideal], ls=":", color=color)
        if crit.batch is not None:
            ax.plot([crit.batch], [crit.steps], marker="o", ms=14, mfc="none", color=color)
    if any(not reached for points in drawn.values() for *_, reached in points.values()):
        ax.axhline(top, color="0.6", lw=0.8)
        ax.annotate("not reached", (0.01, top), xycoords=("axes fraction", "data"), va="bottom", fontsize="small",
                    color="0.4")
    ax.set_xscale("log", base=2)
    batches = sorted({b for by_batch in scaling.values() for b in by_batch})
    if batches:  # the measured batch sizes, written out (32, not 2^5)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("steps to target (median over seeds)")
    ax.set_title(f"{task}: steps to target against batch size")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize="small")
    save(fig, path)
    return drawn


def time_curve_figure(runs, task, key, ylabel, path) -> str:
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
    save(fig, path)
    return (f"{task}: {ylabel} against training seconds at each epoch's end, mean over seeds"
            + (f"; {BAND}" if banded else ""))


def interval_bars(labels, values: list, ylabel, title, path) -> None:
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
    save(fig, path)


def expected_best_figure(found: list[Search], task, path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for s in found:
        e = s.expected_best()
        ax.plot(range(1, len(e) + 1), e, marker="o", ms=3, label=f"{s.entry} ({s.study})")
    ax.set_xlabel("trials k")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # k trials: whole numbers
    ax.set_ylabel("expected best validation score")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{task}: expected best score after k trials")
    ax.grid(alpha=0.3)
    _legend(ax, len(found))
    save(fig, path)
