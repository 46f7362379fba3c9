"""The report's Markdown tables: the summary rows, the searches, batch scaling, and the notes that explain them."""

from __future__ import annotations

from curvbench.recipe import derived
from curvbench.report import batch_scaling, stats
from curvbench.report.collect import Search
from curvbench.report.summary import Row


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
    notes = (([f"{r.failed} diverged"] if r.failed else []) + ([f"{r.errors} failed by an error"] if r.errors else [])
             + ([f"{r.ended} ended with its process"] if r.ended else []))
    return f"{r.runs} ({', '.join(notes)})" if notes else str(r.runs)


COLUMNS = ("task", "method", "runs", "best test metric", "final test metric", "s/epoch", "total train s",
           "reached", "time to target s", "epochs to target", "with its search s", "step time / SGD",
           "against the baseline")


QUIET_COLUMNS = ("quiet s to target", "against the baseline, quiet s")


def columns(rows: list[Row]) -> tuple[str, ...]:
    """The main table's header: the quiet-seconds columns only when a step-cost table priced a row."""
    return COLUMNS + (QUIET_COLUMNS if any(r.qtt is not None for r in rows) else ())


def row_cells(r: Row, quiet: bool = False) -> list[str]:
    """One table row's cells, for Markdown and HTML alike; times measured on a busy machine carry a mark."""
    aimed = r.ttt is not None
    mark = f" (busy: {r.busy}/{r.runs})" if r.busy else ""
    cells = [r.task, r.entry, _runs(r), _f(r.best), _f(r.final), _f(r.sec_per_epoch, "{:.2f}") + mark,
             _f(r.total, "{:.1f}") + mark, r.reached or "-", (_ft(r.ttt) + mark) if aimed else "-",
             _ft(r.ett) if aimed else "-", _with_search(r), _f(r.ratio_sgd, "{:.2f}"),
             "-" if r.vs is None else r.vs.text()]
    if quiet:
        cells += [_ft(r.qtt), "-" if r.qvs is None else r.qvs.text()]
    return cells


def table_body(rows: list[Row]) -> tuple[tuple[str, ...], list[list[str]]]:
    head = columns(rows)
    return head, [row_cells(r, quiet=len(head) > len(COLUMNS)) for r in rows]


def markdown_table(rows: list[Row]) -> str:
    return markdown(*table_body(rows))


def quiet_note(rows: list[Row]) -> str | None:
    """What the quiet-seconds columns are and which tables priced which rows; None when no row was priced."""
    used = {r.priced_by.source: r.priced_by for r in rows if r.priced_by is not None}
    if not used:
        return None
    return ("Quiet s to target: each seed's steps to target times the time per step that "
            "`benchmarks/step_cost.py` measured alone, interleaved with the other entries, amortised work included "
            "(" + "; ".join(t.describe() for t in used.values()) + "); a seed that missed stays not reached, and "
            "the test against the baseline is run again on these seconds. Claims about seconds are judged on them "
            "where a row has them. Rows without them were not priced: the table has no entry, task or batch size "
            "for them.")


SEARCH_COLUMNS = ("task", "method", "study", "trials", "seeds per score", "best score", "best trial",
                  "its hyperparameters", "search s", "expected best after k trials")


def search_cells(s: Search) -> list[str]:
    return [s.task, s.entry, s.study, str(s.n_trials), str(len(s.best_runs)), s.score_text(), str(s.best.trial),
            s.chosen(), f"{s.seconds:.0f}", expected_text(s)]


def search_table(found: list[Search]) -> str:
    return markdown(SEARCH_COLUMNS, [search_cells(s) for s in found])


def markdown(columns, body) -> str:
    """A Markdown table: the header, its rule, a line per row of cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def expected_text(s: Search) -> str:
    """k=1: 0.9712, 2: 0.9790, 4: ..., n: ...: the expected best after 1, 2, 4, ... and all trials."""
    e = s.expected_best()
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k <= len(e)} | {len(e)}) if e else []
    return ", ".join(f"k={k}: {e[k - 1]:.4f}" for k in ks) or "-"


SCALING_NOTE = ("scale-batch's runs: per method and batch size, the median steps (and training seconds) to target "
                "over seeds with that batch size's tuned setting; the critical batch size is the largest measured "
                "batch whose steps stay within 20% of ideal linear scaling from the smallest batch, at it and every "
                "smaller one (>= when every measured batch still scaled). Beside each larger batch, its scaling "
                "efficiency: the ideal linear-scaling steps from the smallest batch over the steps measured (100% "
                "is perfect scaling; below 83%, 1/1.2, the batch is past the critical one), which orders methods "
                "between the measured batch sizes. \"not reached in N\": the median seed missed the target, and the "
                "longest run that missed it trained N steps (the recipe's epochs at that batch size). A batch size "
                "whose search's best learning "
                "rate lies at an edge of the range searched, or is the lowest or highest of the values tried, says "
                "so: its tuned setting may not be the best there is, and its steps may be too many. The fastest time "
                "is in quiet seconds (steps to target times the step cost that `--step-costs` measured at that "
                "batch size) where a table priced the batch size, else the runs' own training seconds, which a busy "
                "machine inflates.")


def scaling_table(scaling: dict, found: list[Search] = ()) -> str:
    """Per task, recipe and method: median steps to target at each batch size (a batch whose search's best lr is at
    an edge says so), the critical batch size, the steps there and the fastest time over batch sizes."""
    import math

    edges = {(s.task, s.study): s.edges().get("lr") for s in found}

    def steps_cell(task, recipe, entry, b, point, crit) -> str:
        st = point.steps
        text = f"{st.median:.0f}" if math.isfinite(st.median) else (
            f"not reached in {point.missed_within}" if point.missed_within else "not reached")
        eff = crit.efficiency(b, st.median)
        notes = ([f"{eff:.0%} of linear"] if eff is not None else [])
        edge = edges.get((task, derived.study(derived.at_batch(recipe, b), entry, derived.BUDGET_SAMPLER)))
        notes += [f"lr {edge}"] if edge else []
        return f"{b}: {text}" + (f" ({'; '.join(notes)})" if notes else "")

    lines = ["| task | recipe | method | steps to target by batch size | critical batch | steps at it | "
             "fastest in seconds |", "|---|---|---|---|---|---|---|"]
    for (task, recipe, entry), by_batch in sorted(scaling.items()):
        crit = batch_scaling.critical_batch({b: p.steps.median for b, p in by_batch.items()})
        steps = ", ".join(steps_cell(task, recipe, entry, b, p, crit) for b, p in sorted(by_batch.items()))
        timed = [(p.seconds.median, b, p.quiet) for b, p in by_batch.items()
                 if p.seconds is not None and math.isfinite(p.seconds.median)]
        fastest = "not reached"
        if timed:
            secs, b, quiet = min(timed)
            fastest = f"{secs:.1f} s at {b}" + (" (quiet)" if quiet else " (the runs' own seconds)")
        at = "-" if crit.steps is None else f"{crit.steps:.0f}"
        lines.append(f"| {task} | {recipe} | {entry} | {steps} | {crit.text()} | {at} | {fastest} |")
    return "\n".join(lines) + "\n"


CLAIMS_NOTE = ("Each claim judged on each setting that ran it (a recipe's to-target runs on the task): confirmed or "
               "refuted by one-sided Mann-Whitney tests at the 5% level (fastest and slowest: every pair must agree "
               "to confirm; one pair against, at 5% over the number of pairs, refutes), about-equal claims by the "
               "speed-up's 95% interval against the tolerance, at-most claims by the median's interval; inconclusive "
               "otherwise. Seconds are quiet seconds (steps to target times a measured step cost) where "
               "`--step-costs` priced the runs, else the runs' own training seconds. Missing runs and tasks not run "
               "are said, never guessed.")


def explanation(baseline: str) -> str:
    return stats.EXPLANATION.replace("Against the baseline:", f"Against the baseline ({baseline}, within the same task, "
                                                        f"recipe and target):")


def report_notes(baseline: str) -> list[str]:
    """The paragraphs above the report's main table: what a row is and what each column means."""
    return [
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
        "against SGD's, runs of one kind (searches with searches) and of the row's own recipe where it has SGD "
        "(a recipe's runs ran under one load).",
    ]


SEARCH_NOTE = ("Best score: the best value of the metric over the epochs of a trial on the split the search was scored "
               "on, named beside it (val; test for a search without a validation split), the median over its seeds "
               "when each trial ran several (`tune --seeds N`). Expected best after k trials: the mean of the "
               "best score over every k-subset of the search's trials (Dodge et al. 2019, exact), so that searches of "
               "different sizes compare at equal budgets. Search s: training seconds of all its trials. A "
               "hyperparameter whose best value is at an edge of the range searched, or the lowest or highest of "
               "three or more values tried, says so: the best may lie beyond it.")
