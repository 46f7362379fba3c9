"""Runs grouped into rows, one per task, setting and method entry: means over seeds, censored time to target with
its interval, the test against the baseline, the step time relative to SGD, and the performance profile."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from curvbench import record
from curvbench.report import stats
from curvbench.report.collect import RunData, Search, assign_labels, execution_word
from curvbench.report.step_costs import StepCosts, quiet_seconds, table_for


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
    ended: int = 0  # runs whose process died without closing them (killed, crashed): cut short, most often rerun
    stt: stats.Censored | None = None  # steps to target
    name: str = ""  # the recipe entry (the label adds what sets the configuration apart)
    protocol: str = "train"
    recipe: str = "?"
    target: float | None = None
    vs: stats.Comparison | None = None  # seconds to target against the baseline of its setting
    search: "Search | None" = None  # the search whose winner this row runs, when one is in the selection
    params: dict = field(default_factory=dict)  # the first run's params (all runs of a row share them but the seed)
    busy: int = 0  # runs of the row timed while other processes used the cores they needed
    qtt: stats.Censored | None = None  # quiet seconds to target: steps to target x a step-cost table's time per step
    qvs: stats.Comparison | None = None  # quiet seconds against the baseline's
    priced_by: "StepCosts | None" = None  # the step-cost table behind qtt
    missed_within: int | None = None  # the most steps a seed that missed the target trained ("not reached in N")
    execution: dict = field(default_factory=dict)  # how the task computed (precision, memory format), where tagged


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


def _missed_within(runs: list[RunData]) -> int | None:
    """The most steps trained by a seed that aimed at the target and missed it: what "not reached" was given."""
    trained = [r.curve(record.STEPS)[-1] for r in runs if r.target_reached == "false" and r.curve(record.STEPS)]
    return int(max(trained)) if trained else None


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
        first = rs[0]  # every run of a row shares its settings but the seed
        rows.append(Row(
            task=task, entry=entry, runs=len(rs), best=best, final=final, sec_per_epoch=spe, total=total,
            ttt=ttt, ett=_censored(rs, record.EPOCHS_TO_TARGET), stt=_censored(rs, record.STEPS_TO_TARGET),
            reached=f"{ttt.reached}/{ttt.n}" if ttt else "", ratio_sgd=None, metric=metric, method=first.method,
            tuned=first.study is not None, sec_per_step=_mean([_sec_per_step(r) for r in rs]),
            failed=sum(r.status == "FAILED" and r.outcome == "diverged" for r in rs),
            errors=sum(r.status == "FAILED" and r.outcome is None for r in rs),
            ended=sum(r.status == "FAILED" and r.outcome == record.PROCESS_ENDED for r in rs),
            name=first.entry, protocol=first.protocol, recipe=first.recipe, target=first.target,
            params=first.params, busy=sum(r.timing == "busy" for r in rs), missed_within=_missed_within(rs),
            execution=first.execution))
    # step time relative to SGD, within runs measured alike: searches' best trials against SGD's best trial,
    # the other runs against the SGD runs of their own recipe where it has them (one recipe's runs ran together,
    # under one load; a search and a later comparison did not), else against the first SGD row.
    # Seconds per step = training seconds / steps, so runs stopped inside an epoch (at a target) count right.
    for task in {r.task for r in rows}:
        batch = {r.batch_size for r in runs if r.task == task}
        for tuned in (False, True):
            same = [r for r in rows if r.task == task and r.tuned == tuned]
            sgds = [r for r in same if r.method == "sgd" and r.name == "sgd"]  # the recipes' entries "sgd"
            if sgds and len(batch) == 1:  # the same batch size
                for row in same:
                    alike = [r for r in sgds if r.execution == row.execution]  # bf16 steps against bf16 SGD's
                    if not alike:
                        continue
                    sgd = next((r for r in alike if r.recipe == row.recipe), alike[0])
                    if row.sec_per_step and sgd.sec_per_step:
                        row.ratio_sgd = row.sec_per_step / sgd.sec_per_step
                    elif row.sec_per_epoch and sgd.sec_per_epoch:  # runs logged without steps: whole epochs
                        row.ratio_sgd = row.sec_per_epoch / sgd.sec_per_epoch
    for row, vs in zip(rows, against_baseline(rows, baseline, lambda r: r.ttt)):
        row.vs = vs
    return rows


def against_baseline(rows: list[Row], baseline: str, measure) -> list[stats.Comparison | None]:
    """Each row's `measure(row)` (a Censored, or None) tested against the baseline row of its setting (task and
    protocol, which names the recipe and target, computed alike: float32 against float32, bf16 against bf16); None
    for the baseline itself and where either has no measure."""
    out = []
    for row in rows:
        base = next((b for b in rows if measure(b) is not None and b.task == row.task and b.protocol == row.protocol
                     and b.name == baseline and b.execution == row.execution), None)
        tested = measure(row) is not None and base is not None and base is not row
        out.append(stats.compare(measure(row), measure(base), baseline) if tested else None)
    return out


def price_steps(rows: list[Row], tables: list[StepCosts], baseline: str = "sgd") -> None:
    """Quiet seconds to target for the to-target rows a step-cost table prices (same task, batch size and entry, and
    the table's recipe or one derived from it when the table names one),
    and their test against the baseline row of the same setting when it is priced too."""
    for row in rows:
        if row.stt is None:
            continue
        t = table_for(tables, row.task, row.params.get("training.batch_size"), row.name, row.recipe, row.execution)
        if t is not None:
            row.qtt, row.priced_by = quiet_seconds(row.stt, t.ms_per_step[row.name]), t
    for row, qvs in zip(rows, against_baseline(rows, baseline, lambda r: r.qtt)):
        row.qvs = qvs


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
    """The to-target rows as claims.evaluate reads them: {(task, recipe, target): {entry: {measure: Censored}}}. Runs
    of one recipe computed otherwise (float32, bf16) are settings of their own: "cifar (bf16, channels_last)"."""
    out: dict = defaultdict(dict)
    for r in rows:
        if r.ttt is not None and r.target is not None:
            seconds = r.qtt if r.qtt is not None else r.ttt  # quiet seconds where a step-cost table priced the row
            how = ", ".join(execution_word(v) for v in r.execution.values())
            recipe = f"{r.recipe} ({how})" if how else r.recipe
            out[(r.task, recipe, r.target)][r.name] = {"seconds": seconds, "epochs": r.ett, "steps": r.stt}
    return dict(out)


def profile_values(times, tasks, entries, tau: float = 1.0) -> dict[str, float]:
    return {e: sum(1 for t in tasks if times[t].get(e) is not None
                   and times[t][e] <= tau * min(v for v in times[t].values() if v is not None)) / len(tasks)
            for e in entries}
