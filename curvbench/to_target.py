"""Time to a target: train each method until its evaluation metric first reaches the target.

Time-to-target counts training seconds only (evaluations, logging and checkpoints are off the clock; CUDA is
synchronised before the clock is read). Steps and epochs to target come with it, epochs fractional when the
evaluation falls inside an epoch. A method that never gets there within the budget is recorded as not reached."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from curvbench import engine
from curvbench.errors import CurvbenchError
from curvbench.recipe import Recipe
from curvbench.runner import Interrupted, display_name, experiment_name, load_task, run_one
from curvbench.timing import resolve_device, set_threads
from curvbench.tracking import Tracker
from curvbench import record


@dataclass
class TargetRun:
    entry: str
    method: str
    seed: int
    reached: bool
    status: str
    seconds: float | None = None  # training seconds when the target was first reached
    steps: int | None = None
    epochs: float | None = None
    value: float | None = None  # the metric at that evaluation
    evaluations: list = field(default_factory=list)  # every EvalPoint, for inspection
    run_id: str | None = None


@dataclass
class TargetSummary:
    entry: str
    runs: list[TargetRun]

    @property
    def reached(self) -> list[TargetRun]:
        return [r for r in self.runs if r.reached]

    def stat(self, attr: str) -> tuple[float, float, float] | None:
        """(median, min, max) over the seeds that reached the target; None if none did."""
        vals = [getattr(r, attr) for r in self.reached]
        return (statistics.median(vals), min(vals), max(vals)) if vals else None


def check_arguments(acc: float | None, eval_every: int | None, seeds: int | None) -> None:
    if acc is not None and not 0 < acc <= 1:
        raise CurvbenchError(f"--acc: expected a number > 0 and <= 1, got {acc:g}")
    if eval_every is not None and eval_every < 1:
        raise CurvbenchError(f"--eval-every: expected an integer >= 1, got {eval_every}")
    if seeds is not None and seeds < 1:
        raise CurvbenchError(f"--seeds: expected an integer >= 1, got {seeds}")


def first_reaching(points: list[engine.EvalPoint], key: str, target: float) -> engine.EvalPoint | None:
    return next((p for p in points if p.metrics[key] >= target), None)


def run_to_target(
    recipe: Recipe,
    tracker: Tracker | None,
    reporter,
    target: float | None = None,
    eval_every: int | None = None,
    on: str | None = None,
) -> tuple[list[TargetSummary], str | None, str]:
    """Runs every method entry and seed of `recipe` (its epochs are the budget). Returns the summaries, the
    parent run's id and the metric key aimed at (e.g. val_accuracy)."""
    target = target if target is not None else recipe.training.target
    if target is None:
        raise CurvbenchError(f"{recipe.source}: training.target is not set; pass --acc")
    device = resolve_device(recipe.training.device)
    set_threads(recipe.training.threads)
    task = load_task(recipe, device)
    on = on or recipe.default_split()
    if on not in task.splits:
        raise CurvbenchError(f"--on {on}: the task has no {on} split (hold one out with training.validation)")
    metric = recipe.task.metric
    key = record.split_metric(on, metric)
    every = eval_every or task.steps_per_epoch(recipe.training.batch_size)
    parent = None
    if tracker is not None:
        parent = tracker.start(
            experiment_name(recipe),
            f"to-target-{recipe.task.dataset}-{target:g}",
            {"target": target, "metric": key, "eval_every": every, "max_epochs": recipe.training.epochs,
             "seeds": recipe.training.seeds, "methods": ",".join(m.name for m in recipe.methods)},
            {record.KIND: record.TO_TARGET, record.TASK: recipe.task.dataset, record.RECIPE: recipe.name,
             record.RECIPE_HASH: recipe.digest()},
        )
    summaries: list[TargetSummary] = []
    reporter.expect_runs(len(recipe.methods) * len(recipe.training.seeds))  # method x seed, k of N
    try:
        for entry in recipe.methods:
            runs = []
            for seed in recipe.training.seeds:
                points: list[engine.EvalPoint] = []

                def stop(point, points=points):
                    points.append(point)
                    return point.metrics[key] >= target

                schedule = engine.EvalSchedule(every, on, stop)
                outcome = run_one(recipe, task, entry, seed, device, tracker, reporter,
                                  parent_run_id=parent and parent.run_id, eval_schedule=schedule,
                                  extra_tags={record.KIND: record.TO_TARGET_RUN, record.TARGET: target},
                                  run_name=display_name(recipe, entry, seed, suffix=f"to {key} {target:g}"))
                hit = first_reaching(points, key, target)
                r = TargetRun(entry.name, entry.method, seed, hit is not None, outcome.status,
                              evaluations=points, run_id=outcome.run_id)
                if hit is not None:
                    r.seconds, r.steps, r.epochs, r.value = hit.train_seconds, hit.step, hit.epoch, hit.metrics[key]
                if outcome.run is not None:
                    for p in points:
                        outcome.run.log_metrics({record.eval_metric(key): p.metrics[key],
                                                 record.EVAL_TRAIN_SECONDS: p.train_seconds},
                                                step=p.step)
                    outcome.run.set_tags({record.TARGET_REACHED: str(r.reached).lower()})
                    if r.reached:
                        outcome.run.log_metrics({record.TIME_TO_TARGET: r.seconds, record.STEPS_TO_TARGET: r.steps,
                                                 record.EPOCHS_TO_TARGET: r.epochs}, step=0)
                runs.append(r)
            summaries.append(TargetSummary(entry.name, runs))
    except Interrupted as e:
        if parent is not None:
            parent.end("KILLED", e.reason)
        raise
    if parent is not None:
        for s in summaries:
            parent.log_metrics({f"{s.entry}.reached": len(s.reached), f"{s.entry}.runs": len(s.runs)}, step=0)
            for attr in ("seconds", "epochs"):
                st = s.stat(attr)
                if st:
                    parent.log_metrics({f"{s.entry}.{attr}_to_target_median": st[0],
                                        f"{s.entry}.{attr}_to_target_min": st[1],
                                        f"{s.entry}.{attr}_to_target_max": st[2]}, step=0)
        parent.log_text(summary_markdown(summaries, target, key), "to_target.md")
        parent.end("FINISHED")
    return summaries, parent and parent.run_id, key


def _fmt(st, unit="") -> str:
    return "not reached" if st is None else f"{st[0]:.2f}{unit} [{st[1]:.2f}, {st[2]:.2f}]"


def summary_markdown(summaries: list[TargetSummary], target: float, key: str) -> str:
    lines = [f"Target: {key} >= {target:g}. Median over seeds that reached it [min, max].", "",
             "| method | reached | seconds to target | epochs to target |", "|---|---:|---:|---:|"]
    for s in summaries:
        lines.append(f"| {s.entry} | {len(s.reached)}/{len(s.runs)} | {_fmt(s.stat('seconds'), ' s')} | "
                     f"{_fmt(s.stat('epochs'))} |")
    return "\n".join(lines) + "\n"
