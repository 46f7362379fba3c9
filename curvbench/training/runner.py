"""Runs a resolved recipe: every method entry and seed, each as one tracked MLflow run."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from curvbench import __version__, methods, record
from curvbench.errors import interruption
from curvbench.recipe.loading import Recipe
from curvbench.tracking.client import Tracker, flatten, git_commit
from curvbench.training import engine, machine
from curvbench.training.timing import resolve_device, set_threads


@dataclass
class RunOutcome:
    name: str
    entry: str
    method: str
    seed: int
    status: str
    reason: str = ""
    run_id: str | None = None
    epochs: list = field(default_factory=list)
    train_seconds: float = 0.0
    steps: int = 0
    result: object = None
    run: object = None  # the TrackedRun, when tracked


class Interrupted(Exception):
    """Ctrl-C: the current run was ended as KILLED; `outcomes` holds every run so far, that one included."""

    def __init__(self, outcomes: list[RunOutcome], reason: str = "interrupted"):
        super().__init__(reason)
        self.outcomes, self.reason = outcomes, reason


def load_task(recipe: Recipe, device: torch.device):
    from curvbench.tasks import protocol, spec_of

    task = spec_of(recipe.task).load(recipe.task, device)
    protocol.check(task, recipe.task, [methods.get(e.method) for e in recipe.methods])
    task.hold_out(recipe.training.validation)
    return task


def prepare(recipe: Recipe) -> tuple[torch.device, object]:
    """What every command sets up before its first run: the device, the threads, the loaded task."""
    device = resolve_device(recipe.training.device)
    set_threads(recipe.training.threads)
    return device, load_task(recipe, device)


def single_run_recipe(recipe: Recipe, entry, seed: int) -> dict:
    """The resolved recipe of one run: its one method and its one seed. Re-runnable as it stands."""
    d = recipe.to_dict()
    d["training"]["seeds"] = [seed]
    d["methods"] = {entry.name: ({"method": entry.method} if entry.method != entry.name else {}) | entry.hparams}
    d.pop("search", None)
    return d


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def display_name(recipe: Recipe, entry, seed: int, shown: dict | None = None, suffix: str = "") -> str:
    """What a run is, most telling first (the MLflow UI cuts long names from the right): the entry, the
    hyperparameters it sets away from the method's defaults (or `shown`, the ones a search varies), the seed,
    then `suffix` (a trial number, a target). Runs that differ in any of these have different names; the
    task comes first only when the experiment is not named after it."""

    if shown is None:
        defaults = methods.get(entry.method).defaults()
        shown = {k: v for k, v in entry.hparams.items() if defaults.get(k) != v}
    parts = [entry.name, *(f"{k}={_value(v)}" for k, v in shown.items()), f"s{seed}"]
    if experiment_name(recipe) != recipe.task.dataset:
        parts.insert(0, recipe.task.dataset)
    return " ".join(parts) + (f" {suffix}" if suffix else "")


def experiment_name(recipe: Recipe) -> str:
    return recipe.experiment or recipe.task.dataset


class _Relay:
    """Engine callbacks -> the tracked run (one batched call per epoch) and the reporter."""

    def __init__(self, run, reporter, name, epochs, epoch_hook=None):
        self.run, self.reporter, self.name, self.epochs = run, reporter, name, epochs
        self.epoch_hook = epoch_hook  # may raise engine.StopTraining (tune's pruner)
        self.records: list = []

    def on_start(self, total_steps, steps_per_epoch):
        self.reporter.run_started(self.name, total_steps, steps_per_epoch, self.epochs)

    def on_resumed(self, step):
        self.reporter.run_resumed(step)

    def on_progress(self, step, epoch, loss):
        self.reporter.progress(step, epoch, loss)

    def log_unfinished_epoch(self, steps: int, train_seconds: float) -> None:
        """Steps and training seconds of an epoch that did not end (Ctrl-C, divergence, a target reached inside
        it): logged at that epoch's number, so that minutes of training inside a first epoch are not lost."""
        done = self.records[-1].step if self.records else 0
        if self.run is not None and steps > done:
            self.run.log_metrics({record.STEPS: steps, record.TRAIN_SECONDS: train_seconds},
                                 step=len(self.records) + 1)

    def on_epoch_end(self, epoch_record):
        self.records.append(epoch_record)
        if self.run is not None:
            self.run.log_metrics(epoch_record.metrics, step=epoch_record.epoch)
        self.reporter.epoch_end(epoch_record)
        if self.epoch_hook is not None:
            self.epoch_hook(epoch_record)


def run_one(
    recipe: Recipe,
    task,
    entry,
    seed: int,
    device: torch.device,
    tracker: Tracker | None,
    reporter,
    parent_run_id: str | None = None,
    eval_schedule: engine.EvalSchedule | None = None,
    extra_tags: dict | None = None,
    run_name: str | None = None,
    epoch_hook=None,
    checkpoints=None,
) -> RunOutcome:
    import yaml

    name = run_name or display_name(recipe, entry, seed)
    resolved = single_run_recipe(recipe, entry, seed)
    timing_tags, busy = machine.before_run(torch.get_num_threads(), device)
    if busy:
        machine.warn_once(busy)
    run = None
    if tracker is not None:
        tags = {
            record.TASK: recipe.task.dataset,
            record.METHOD: entry.method,
            record.ENTRY: entry.name,
            record.SEED: seed,
            record.RECIPE: recipe.name,
            record.RECIPE_HASH: recipe.digest(),
            record.VERSION: __version__,
            record.GIT_COMMIT: git_commit(),
            record.TORCH_VERSION: torch.__version__,
            record.DEVICE: str(device),
            record.THREADS: torch.get_num_threads(),
            **getattr(task, "run_tags", {}),  # a task's own (precision, memory format)
            **timing_tags,  # the CPU, the load, other processes' share, the GPU's clocks
            **(extra_tags or {}),
        }
        params = flatten(resolved)
        params.update(source_params(recipe, entry))
        run = tracker.start(experiment_name(recipe), name, params, tags, parent_run_id)
        run.log_text(yaml.safe_dump(resolved, sort_keys=False), "recipe.yaml")
    outcome = RunOutcome(name, entry.name, entry.method, seed, engine.FAILED, run_id=run and run.run_id)
    relay = _Relay(run, reporter, name, recipe.training.epochs, epoch_hook)
    try:
        result = engine.train(task, entry, recipe.training, seed, device, relay, eval_schedule, checkpoints)
    except KeyboardInterrupt as e:
        outcome.status, outcome.reason = engine.KILLED, interruption(e)
        outcome.epochs = relay.records
        partial = getattr(e, "partial_result", None)
        if partial is not None:  # the real training time and steps, not 0
            outcome.train_seconds, outcome.steps = partial.train_seconds, partial.steps
        if run is not None:
            relay.log_unfinished_epoch(outcome.steps, outcome.train_seconds)
            run.set_tags({record.OUTCOME: "killed", **machine.after_run(torch.get_num_threads(), timing_tags)})
            run.end("KILLED", outcome.reason)
        reporter.run_ended(outcome)
        raise Interrupted([outcome], outcome.reason) from None
    except BaseException as e:
        outcome.reason = f"{e.__class__.__name__}: {e}"
        if run is not None:
            run.end("FAILED", outcome.reason)
        raise
    outcome.status, outcome.reason, outcome.result = result.status, result.reason, result
    outcome.epochs, outcome.train_seconds, outcome.steps = result.epochs, result.train_seconds, result.steps
    if run is not None:
        relay.log_unfinished_epoch(result.steps, result.train_seconds)  # a run that diverged or stopped mid-epoch
        outcome_tag = "stopped early" if result.stopped_early else result.status.lower()
        resumed = {record.RESUMED_AT_EPOCH: result.resumed_at_epoch,
                   record.RESUMED_AT_STEP: result.resumed_at_step} if result.resumed_at_step else {}
        run.set_tags({record.OUTCOME: outcome_tag, **result.tags, **resumed,
                      **machine.after_run(torch.get_num_threads(), timing_tags)})
        per_step = {record.SECONDS_PER_STEP: result.train_seconds / result.steps} if result.steps else {}
        run.log_metrics({**summary_metrics(result.epochs), **per_step}, step=0)
        run.end("FINISHED" if result.status == engine.FINISHED else "FAILED", result.reason)
    outcome.run = run
    if run is not None:
        outcome.run_id = run.run_id  # created late when the tracking server was away at the run's start
    reporter.run_ended(outcome)
    return outcome


def source_params(recipe: Recipe, entry) -> dict[str, str]:
    """Where a run's method and task come from when not from curvbench itself: the class's import path or the
    entry point, and the installed version of the package that provides it."""
    from curvbench.tasks import spec_of

    out = {}
    spec = methods.get(entry.method)
    if spec.source != "built-in":
        source = record.METHOD_SOURCE if spec.source.startswith("entry point") else record.METHOD_CLASS
        out.update({source: spec.source, record.METHOD_VERSION: spec.version or "unknown"})
    task = spec_of(recipe.task)
    if task.source != "built-in":
        out.update({record.TASK_SOURCE: task.source, record.TASK_VERSION: task.version or "unknown"})
    return out


def summary_metrics(epochs: list) -> dict[str, float]:
    """best_ and final_ of every evaluated metric (best: highest accuracy or F1, lowest loss): one value per run,
    what the MLflow UI can show as columns."""
    out: dict[str, float] = {}
    keys = {k for e in epochs for k in e.metrics if k.startswith(("test_", "val_"))}
    for k in sorted(keys):
        curve = [e.metrics[k] for e in epochs if k in e.metrics]
        out[record.final_metric(k)] = curve[-1]
        out[record.best_metric(k)] = min(curve) if k.endswith("_loss") else max(curve)
    return out


def run_recipe(recipe: Recipe, tracker: Tracker | None, reporter) -> list[RunOutcome]:
    device, task = prepare(recipe)
    outcomes: list[RunOutcome] = []
    reporter.expect_runs(len(recipe.methods) * len(recipe.training.seeds))
    for entry in recipe.methods:
        for seed in recipe.training.seeds:
            try:
                outcomes.append(run_one(recipe, task, entry, seed, device, tracker, reporter))
            except Interrupted as e:
                raise Interrupted(outcomes + e.outcomes, e.reason) from None
    return outcomes
