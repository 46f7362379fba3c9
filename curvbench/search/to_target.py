"""Time to a target: train each method until its evaluation metric first reaches the target.

Time-to-target counts training seconds only (evaluations, logging and checkpoints are off the clock; CUDA is
synchronised before the clock is read). Steps and epochs to target come with it, epochs fractional when the
evaluation falls inside an epoch. A method that never gets there within the budget is recorded as not reached."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from curvbench import record
from curvbench.errors import CurvbenchError
from curvbench.recipe.loading import Recipe
from curvbench.report import stats
from curvbench.tracking.client import Tracker
from curvbench.training import engine
from curvbench.training.runner import Interrupted, display_name, experiment_name, prepare, run_one


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

    def censored(self, attr: str) -> stats.Censored:
        """`attr` (seconds, steps, epochs) over every seed, inf for a seed that did not reach the target."""
        return stats.Censored(tuple(float(getattr(r, attr)) if r.reached and getattr(r, attr) is not None
                                    else math.inf for r in self.runs))


def baseline_of(entries: list[str], given: str | None, n_seeds: int) -> str | None:
    """The entry the others are compared with: `--baseline`, else sgd when the run set has it. A baseline the user
    names must be in the run set, and a test needs 2 seeds."""
    if given is None:
        return "sgd" if "sgd" in entries else None
    if given not in entries:
        raise CurvbenchError(f"--baseline {given}: not among the entries run ({', '.join(entries)})")
    if n_seeds < 2:
        raise CurvbenchError(f"--baseline {given}: a test against the baseline needs at least 2 seeds, got {n_seeds}; "
                             f"pass --seeds 5 (the summary of a single seed needs no --baseline)")
    return given


MAX_SEEDS = 10_000  # seeds 0..N-1 of one command


def check_arguments(acc: float | None, eval_every: int | None, seeds: int | None, on: str | None = None,
                    seed: list[int] | None = None) -> None:
    if seeds is not None and seed:  # --seeds would silently win: say which one means what
        raise CurvbenchError("--seed and --seeds: give one; --seed S runs seed S (repeat it for several), --seeds N "
                             "runs seeds 0..N-1")
    if acc is not None and not 0 < acc <= 1:
        raise CurvbenchError(f"--acc: expected a number > 0 and <= 1, got {acc:g}")
    if eval_every is not None and not 1 <= eval_every <= 2**31 - 1:
        raise CurvbenchError(f"--eval-every: expected an integer from 1 to 2^31 - 1, got {eval_every}")
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise CurvbenchError(f"--seeds: expected an integer from 1 to {MAX_SEEDS}, got {seeds}")
    if on is not None and on not in ("val", "test"):  # train accuracy says nothing of reaching a target
        raise CurvbenchError(f"--on: expected val or test, got {on!r}")


def first_reaching(points: list[engine.EvalPoint], key: str, target: float) -> engine.EvalPoint | None:
    return next((p for p in points if p.metrics[key] >= target), None)


def target_of(recipe: Recipe, acc: float | None) -> float:
    """The target aimed at: --acc when given, else the recipe's training.target."""
    target = acc if acc is not None else recipe.training.target
    if target is None:
        raise CurvbenchError(f"{recipe.source}: training.target is not set; pass --acc")
    return target


def run_to_target(
    recipe: Recipe,
    tracker: Tracker | None,
    reporter,
    target: float | None = None,
    eval_every: int | None = None,
    on: str | None = None,
    storage: str | None = None,
    baseline: str | None = None,
    checkpoints: str | None = None,
) -> tuple[list[TargetSummary], str | None, str]:
    """Runs every method entry and seed of `recipe` (its epochs are the budget). Returns the summaries, the
    parent run's id and the metric key aimed at (e.g. val_accuracy). With a study `storage` the runs are a queue
    that several workers share (`--workers`, or the same command on several machines). `baseline`: the entry
    the others are tested against (default sgd when the recipe has it). A queued run is checkpointed at every
    epoch end in the folder `checkpoints` (default: checkpoints/ beside a SQLite storage, none for a server's), so
    that a run killed after hours resumes from its last epoch when the queue is taken up again."""
    target = target_of(recipe, target)
    baseline = baseline_of([m.name for m in recipe.methods], baseline, len(recipe.training.seeds))
    device, task = prepare(recipe)
    on = on or recipe.default_split()
    if on not in task.splits:
        raise CurvbenchError(f"--on {on}: the task has no {on} split (hold one out with training.validation)")
    metric = recipe.task.metric
    key = record.split_metric(on, metric)
    every = eval_every or task.steps_per_epoch(recipe.training.batch_size)
    parent = None
    if tracker is not None and storage is None:
        parent = tracker.start(experiment_name(recipe), parent_name(recipe, target), parent_params(recipe, target, key, every),
                               parent_tags(recipe))
    reporter.expect_runs(len(recipe.methods) * len(recipe.training.seeds))  # method x seed, k of N
    job = _JobRunner(recipe, task, device, tracker, reporter, key, target, every, on)
    if storage is not None:
        job.checkpoints = checkpoints or checkpoint_folder(storage)
        return _shared(recipe, job, storage, tracker, target, key, every, baseline)
    summaries: list[TargetSummary] = []
    try:
        for entry in recipe.methods:
            runs = [job.run(entry, seed, parent) for seed in recipe.training.seeds]
            summaries.append(TargetSummary(entry.name, runs))
    except Interrupted as e:
        if parent is not None:
            parent.end("KILLED", e.reason)
        raise
    if parent is not None:
        finish_parent(parent, summaries, target, key, baseline)
    return summaries, parent and parent.run_id, key


def parent_name(recipe: Recipe, target: float) -> str:
    return f"to-target-{recipe.task.dataset}-{target:g}"


def parent_params(recipe: Recipe, target: float, key: str, every: int) -> dict:
    return {"target": target, "metric": key, "eval_every": every, "max_epochs": recipe.training.epochs,
            "seeds": recipe.training.seeds, "methods": ",".join(m.name for m in recipe.methods)}


def parent_tags(recipe: Recipe) -> dict:
    return {record.KIND: record.TO_TARGET, record.TASK: recipe.task.dataset, record.RECIPE: recipe.name,
            record.RECIPE_HASH: recipe.digest()}


def finish_parent(parent, summaries: list[TargetSummary], target: float, key: str, baseline: str | None) -> None:
    """The parent's metrics: per entry, seeds reached and run, and for seconds, steps and epochs the censored
    median and its interval (an end that is not reached is not logged); against the baseline the speed-up, its
    interval and the one-sided p-values. Its artifact `to_target.md` is the printed summary."""
    for s, cmp in zip(summaries, comparisons(summaries, baseline)):
        values = {f"{s.entry}.reached": len(s.reached), f"{s.entry}.runs": len(s.runs)}
        for attr in ("seconds", "steps", "epochs"):
            c = s.censored(attr)
            ci = c.interval()
            values[f"{s.entry}.{attr}_to_target_median"] = c.median
            if ci is not None:
                values[f"{s.entry}.{attr}_to_target_ci_low"] = ci.low
                values[f"{s.entry}.{attr}_to_target_ci_high"] = ci.high
        if cmp is not None:
            values[f"{s.entry}.speedup_vs_{cmp.baseline}"] = cmp.speedup
            if cmp.interval is not None:
                values[f"{s.entry}.speedup_ci_low"] = cmp.interval.low
                values[f"{s.entry}.speedup_ci_high"] = cmp.interval.high
            if cmp.p_faster is not None:
                values[f"{s.entry}.p_faster"] = cmp.p_faster
                values[f"{s.entry}.p_slower"] = cmp.p_slower
        parent.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=0)
    if baseline:
        parent.set_tags({record.BASELINE: baseline})
    parent.log_text(summary_markdown(summaries, target, key, baseline), "to_target.md")
    parent.end("FINISHED")


def comparisons(summaries: list[TargetSummary], baseline: str | None) -> list[stats.Comparison | None]:
    """Each entry's seconds to target against the baseline's (None for the baseline itself, or without one)."""
    base = next((s for s in summaries if s.entry == baseline), None)
    if base is None:
        return [None] * len(summaries)
    return [None if s is base else stats.compare(s.censored("seconds"), base.censored("seconds"), baseline)
            for s in summaries]


class _JobRunner:
    """One (method, seed) run to the target: evaluated every `every` steps, stopped at the first evaluation that
    reaches it, its time, steps and epochs to target logged on its run."""

    def __init__(self, recipe, task, device, tracker, reporter, key, target, every, on):
        self.recipe, self.task, self.device, self.tracker, self.reporter = recipe, task, device, tracker, reporter
        self.key, self.target, self.every, self.on = key, target, every, on
        self.checkpoints: str | None = None  # the folder of the queued runs' checkpoints

    def run(self, entry, seed: int, parent) -> TargetRun:
        key, target = self.key, self.target
        points: list[engine.EvalPoint] = []

        def stop(point):
            points.append(point)
            return point.metrics[key] >= target

        schedule = engine.EvalSchedule(self.every, self.on, stop)
        checkpoints = None
        if self.checkpoints:
            from curvbench.training.checkpoints import Checkpoints, key_of

            name = key_of(self.recipe.name, self.recipe.digest(), entry.name, seed, key, target, self.every)
            checkpoints = Checkpoints(self.checkpoints, name)
        outcome = run_one(self.recipe, self.task, entry, seed, self.device, self.tracker, self.reporter,
                          parent_run_id=parent and parent.run_id, eval_schedule=schedule,
                          extra_tags={record.KIND: record.TO_TARGET_RUN, record.TARGET: target},
                          run_name=display_name(self.recipe, entry, seed, suffix=f"to {key} {target:g}"),
                          checkpoints=checkpoints)
        hit = first_reaching(points, key, target)
        r = TargetRun(entry.name, entry.method, seed, hit is not None, outcome.status,
                      evaluations=points, run_id=outcome.run_id)
        if hit is not None:
            r.seconds, r.steps, r.epochs, r.value = hit.train_seconds, hit.step, hit.epoch, hit.metrics[key]
        if outcome.run is not None:
            for p in points:
                outcome.run.log_metrics({record.eval_metric(key): p.metrics[key],
                                         record.EVAL_TRAIN_SECONDS: p.train_seconds}, step=p.step)
            outcome.run.set_tags({record.TARGET_REACHED: str(r.reached).lower()})
            if r.reached:
                outcome.run.log_metrics({record.TIME_TO_TARGET: r.seconds, record.STEPS_TO_TARGET: r.steps,
                                         record.EPOCHS_TO_TARGET: r.epochs}, step=0)
        return r


# ---------------------------------------------------------------------------------------------- shared queue
RESULT_FIELDS = ("reached", "status", "seconds", "steps", "epochs", "value", "run_id")


def checkpoint_folder(storage: str) -> str | None:
    """checkpoints/ beside a SQLite study storage; None (no checkpoints) for a database server, whose workers
    may be on other machines: pass --checkpoints for a folder they share."""
    from curvbench.tracking.stores import sqlite_path

    path = sqlite_path(storage)
    if path is None or str(path) in ("", ".", ":memory:"):
        return None
    return str(path.resolve().parent / "checkpoints")


def queue_name(recipe: Recipe, target: float, key: str) -> str:
    return f"{recipe.name}-to-target-{key}-{target:g}"


def jobs_of(recipe: Recipe) -> list[tuple]:
    """Seed-major: every method's first seed before any method's second, so that a queue cut short (a session's
    end, a budget) leaves every method with runs to compare."""
    return [(entry, seed) for seed in recipe.training.seeds for entry in recipe.methods]


def _shared(recipe: Recipe, job: _JobRunner, storage: str, tracker, target: float, key: str, every: int,
            baseline: str | None):
    """The (method, seed) runs as a queue in an Optuna study that every worker, on any machine, pops from; the
    summary comes from every finished run, whichever worker ran it."""
    import optuna

    from curvbench.search import studies
    from curvbench.search.study_loop import open_study, run_study

    jobs = jobs_of(recipe)
    study = open_study(queue_name(recipe, target, key), storage, "minimize", optuna.samplers.RandomSampler(),
                       f"{recipe.digest()} {key} {target:g} every {every} seed-major",
                       "holds the runs of another recipe, target or evaluation interval; pass another --storage or "
                       "start from a new recipe name", settings={"recipe": recipe.to_dict(), "target": target,
                                                                 "target_key": key, "eval_every": every})
    parent = None
    if tracker is not None:
        parent = studies.shared_parent(tracker, study, storage, experiment_name(recipe),
                                       parent_name(recipe, target), parent_params(recipe, target, key, every),
                                       parent_tags(recipe))

    def run(trial, index: int) -> None:
        entry, seed = jobs[index]
        r = job.run(entry, seed, parent)
        for f in RESULT_FIELDS:
            trial.set_user_attr(f, getattr(r, f))
        study.tell(trial, r.seconds if r.reached else math.inf)

    run_study(study, storage, [{"job": i} for i in range(len(jobs))],
              lambda trial: trial.suggest_int("job", 0, len(jobs) - 1), run, parent, what="job")
    summaries, left = shared_summaries(recipe, study)
    if parent is not None:
        if left:
            parent.set_tags({record.SEARCH_STATE: f"partial: {left} run(s) still held by other workers"})
            parent.end("FINISHED")
        else:
            parent.set_tags({record.SEARCH_STATE: "complete"})
            finish_parent(parent, summaries, target, key, baseline)
    return summaries, parent and parent.run_id, key


def shared_summaries(recipe: Recipe, study) -> tuple[list[TargetSummary], int]:
    """The summaries from every finished job of the queue, in the recipe's order, and how many jobs are not
    finished yet."""
    from optuna.trial import TrialState

    jobs = jobs_of(recipe)
    done = {t.params["job"]: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    summaries = []
    for entry in recipe.methods:
        runs = []
        for i, (e, seed) in enumerate(jobs):
            if e.name == entry.name and i in done:
                attrs = done[i].user_attrs
                runs.append(TargetRun(entry.name, entry.method, seed, **{f: attrs.get(f) for f in RESULT_FIELDS}))
        summaries.append(TargetSummary(entry.name, runs))
    return summaries, len(jobs) - len(done)


def queue_summaries(recipe: Recipe, storage: str, target: float, key: str) -> tuple[list[TargetSummary], int, str | None]:
    """What the shared queue holds, read back after its workers are done: the summaries, the jobs not finished,
    and the parent run's id."""
    import optuna

    from curvbench.search import studies

    study = optuna.load_study(study_name=queue_name(recipe, target, key), storage=studies.open_storage(storage))
    summaries, left = shared_summaries(recipe, study)
    return summaries, left, study.user_attrs.get(record.STUDY_PARENT)


def queue_progress(recipe: Recipe, storage: str | None, target: float, key: str) -> tuple[int, int, int]:
    """Jobs finished, running and left in the shared queue (what several workers' combined view shows)."""
    import optuna
    from optuna.trial import TrialState

    from curvbench.search import studies

    try:
        study = optuna.load_study(study_name=queue_name(recipe, target, key), storage=studies.open_storage(storage))
    except KeyError:
        return 0, 0, len(jobs_of(recipe))
    ts = study.get_trials(deepcopy=False)
    done = len({t.params.get("job") for t in ts if t.state == TrialState.COMPLETE})
    running = sum(t.state == TrialState.RUNNING for t in ts)
    return done, running, max(0, len(jobs_of(recipe)) - done - running)


def summary_markdown(summaries: list[TargetSummary], target: float, key: str, baseline: str | None = None) -> str:
    lines = [f"Target: {key} >= {target:g}. {stats.EXPLANATION}", "",
             "| method | reached | seconds to target | epochs to target | steps to target |"
             + (f" against {baseline} |" if baseline else ""), "|---|---:|---:|---:|---:|" + ("---|" if baseline else "")]
    for s, cmp in zip(summaries, comparisons(summaries, baseline)):
        row = (f"| {s.entry} | {len(s.reached)}/{len(s.runs)} | {s.censored('seconds').text()} | "
               f"{s.censored('epochs').text()} | {s.censored('steps').text('{:.0f}')} |")
        if baseline:
            row += " baseline |" if cmp is None else f" {cmp.text()} |"
        lines.append(row)
    return "\n".join(lines) + "\n"
