"""Hyperparameter search with Optuna: grid (the thesis's protocol), random, halton (quasi-random, as AlgoPerf)
or TPE. The study lives next to the runs (SQLite under mlruns/ unless --storage says otherwise), so an
interrupted search resumes without rerunning finished trials and several processes can share one study.

The grid is Optuna's queue of WAITING trials: every grid point is enqueued once and each worker pops the next
one atomically. A trial that was interrupted (FAIL) or whose process died (caught by the storage heartbeat) has
its point enqueued again on the next start. MLflow: one parent run per method and invocation, a child per trial."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace

from curvbench import record
from curvbench.errors import CurvbenchError
from curvbench.recipe import derived
from curvbench.recipe import space as spaces_mod
from curvbench.recipe.loading import MethodEntry, Recipe, holds_val
from curvbench.search import studies
from curvbench.search.studies import (
    held_elsewhere,
    open_storage,
    same_point,
    shared_parent,
)
from curvbench.search.study_loop import open_study, run_study
from curvbench.tasks import spec_of
from curvbench.training import engine
from curvbench.training.runner import display_name, experiment_name, prepare, run_one

SAMPLERS = ("grid", "random", "halton", "tpe")
PRUNERS = ("none", "median", "halving")


@dataclass
class TuneResult:
    entry: str
    study: str
    best_params: dict | None
    best_value: float | None
    trials: list  # optuna FrozenTrials of this study, finished ones
    parent_run_id: str | None
    scored_on: str = "val"  # the split the scores are read from
    metric: str = "val_accuracy"
    seeds: int = 1  # each score is the median over this many seeds
    held: list = field(default_factory=list)  # trials other workers still run: one line each


@dataclass(frozen=True)
class SearchOptions:
    """What a search is asked besides its recipe (`curvbench tune`'s own flags), checked once by `checked`."""

    sampler: str = "grid"
    trials: int | None = None  # per method; None: the whole grid, or DEFAULT_TRIALS
    objective: str = "best"  # best or final value of the metric over a trial's epochs
    on: str | None = None  # the split scored: val (default when there is one) or test
    pruner: str = "none"
    storage: str | None = None
    study: str | None = None  # default RECIPE-METHOD-SAMPLER
    sampler_seed: int = 0
    seeds: int | None = None  # each trial trained with seeds 0..N-1 and scored by the median
    space: tuple[str, ...] = ()  # --space flags, over the recipe's search section
    out: str | None = None  # where the recipe with the best hyperparameters is written

    @classmethod
    def checked(cls, budget: int | None = None, seed: list[int] | None = None, **given) -> "SearchOptions":
        """The options with `--budget K` resolved (K Halton trials per method), every flag checked before anything
        is loaded; `seed` is the run flag --seed, which --seeds must not contradict."""
        opts = cls(**given)
        sampler, trials = budget_mode(budget, opts.sampler, opts.trials)
        opts = replace(opts, sampler=sampler, trials=trials, space=tuple(opts.space or ()))
        check_arguments(opts.sampler, opts.pruner, opts.objective, opts.trials, opts.seeds, opts.on, seed)
        if opts.out:
            check_writable_file(opts.out, "--out")
        return opts


@dataclass(frozen=True)
class PlannedSearch:
    """What a search of one entry would still run (`tune --dry-run`)."""

    entry: str
    n_trials: int  # trials still to run
    points: tuple[dict, ...] | None = None  # the grid's points still to run, in order; None for a sampler's draws
    drawn_from: str = ""  # a sampler's: "halton from {...}"

    def text(self) -> str:
        if self.points is None:
            return f"{self.entry}: {self.n_trials} trial(s) drawn by {self.drawn_from}"
        return f"{self.entry}: {self.n_trials} trial(s) to run"


def search_recipe(ref: str, overrides, opts: SearchOptions) -> Recipe:
    """The recipe a search runs: `ref` with the run flags' `overrides` (recipe.loading.Overrides), a validation
    split held out of train when the task has none and trials are scored on val, and the --space flags over the
    recipe's search section."""
    from curvbench.recipe import loading
    from curvbench.recipe.space import parse_space_flags

    recipe = loading.load(ref, overrides)
    held_out = scoring_overrides(recipe, opts.on)
    if held_out:
        recipe = loading.load(ref, loading.Overrides({**overrides.values, **held_out}, overrides.methods))
    return recipe.with_search(parse_space_flags(list(opts.space)))


def run_search(recipe: Recipe, opts: SearchOptions, tracker, reporter, warn=None, note=None) -> list[TuneResult]:
    """`curvbench tune` in this process: every entry's search, as the options say."""
    return tune(recipe, tracker, reporter, opts.sampler, opts.trials, opts.storage, opts.study, opts.objective,
                opts.on, opts.pruner, opts.sampler_seed, seeds=opts.seeds, warn=warn, note=note)


def make_sampler(name: str, seed: int):
    import optuna

    if name == "grid":
        return optuna.samplers.RandomSampler(seed=seed)  # the queue supplies the points; this samples nothing
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "halton":
        return optuna.samplers.QMCSampler(qmc_type="halton", scramble=True, seed=seed, warn_independent_sampling=False)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise CurvbenchError(f"--sampler: unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")


def make_pruner(name: str):
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    raise CurvbenchError(f"--pruner: unknown pruner {name!r}; known: {', '.join(PRUNERS)}")


def study_name_of(recipe: Recipe, entry: MethodEntry, sampler: str, given: str | None) -> str:
    """RECIPE-ENTRY-SAMPLER, or the name given (suffixed by the entry when the recipe has several)."""
    if not given:
        return derived.study(recipe.name, entry.name, sampler)
    return f"{given}-{entry.name}" if len(recipe.methods) > 1 else given


def trial_seeds(recipe: Recipe, seeds: int | None) -> list[int]:
    """The seeds each trial is trained with: 0..N-1 for --seeds N, else the recipe's first seed."""
    return list(range(seeds)) if seeds else [recipe.training.seeds[0]]


def fingerprint(settings: dict) -> str:
    """`score_settings` hashed: a study is only resumed under the same."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def score_settings(recipe: Recipe, entry: MethodEntry, space: dict, objective: str, key: str,
                   seeds: list[int] | None = None) -> dict:
    """What a trial's score depends on besides the tuned point: kept with a study, and hashed as its fingerprint."""
    d = recipe.to_dict()
    t = d["training"]
    fixed = {k: v for k, v in entry.hparams.items() if k not in space}
    seeds = seeds or [t["seeds"][0]]
    what = {"task": {k: d["task"][k] for k in ("dataset", "model", "metric", "options")},
            "training": {k: t[k] for k in ("epochs", "batch_size", "schedule", "validation")},
            "seed": seeds[0] if len(seeds) == 1 else seeds, "method": entry.method, "fixed": fixed, "space": space,
            "objective": f"{objective} {key}"}
    return json.loads(json.dumps(what, sort_keys=True, default=str))  # as a study's user attribute holds it


# what a study made under another fingerprint is refused with: trials scored otherwise are not mixed into it
FINGERPRINT_CLASH = ("was run with another recipe or search space (epochs, schedule, fixed hyperparameters, grid or "
                     "objective); pass --study NAME to start a new one")
DEFAULT_TRIALS = 20  # trials per method when neither --trials nor a grid says how many


VALIDATION_HELD_OUT = 0.1  # the fraction of train held out to score trials on, for tasks without a validation split


def scoring_overrides(recipe: Recipe, on: str | None) -> dict:
    """What tune changes in a recipe to score trials on a validation split when its task has none of its own and
    none is held out: VALIDATION_HELD_OUT of train (the test split stays for the final runs), unless --on test."""
    if on == "test" or holds_val(recipe.task, recipe.training.validation):
        return {}
    return {"training.validation": VALIDATION_HELD_OUT}


def budget_of(trials: int | None, points: list[dict] | None) -> int:
    """Trials per method: --trials, else the whole grid, else DEFAULT_TRIALS."""
    if trials is not None:
        return trials
    return len(points) if points is not None else DEFAULT_TRIALS


def objective_value(outcome, key: str, objective: str) -> float | None:
    curve = [e.metrics[key] for e in outcome.epochs if key in e.metrics]
    if not curve:
        return None
    return max(curve) if objective == "best" else curve[-1]


def budget_mode(budget: int | None, sampler: str, trials: int | None) -> tuple[str, int | None]:
    """`--budget K`: every method gets K trials from the same quasi-random sampler (scrambled Halton over each
    method's ranges, as AlgoPerf), so that no method wins by a larger search. Returns the sampler and trials."""
    if budget is None:
        return sampler, trials
    if budget < 1:
        raise CurvbenchError(f"--budget: expected an integer >= 1, got {budget}")
    if trials is not None and trials != budget:
        raise CurvbenchError(f"--budget {budget} sets the trials per method; drop --trials {trials}")
    if sampler not in ("grid", derived.BUDGET_SAMPLER):  # grid: the flag's default, i.e. not given
        raise CurvbenchError(f"--budget draws its trials with the {derived.BUDGET_SAMPLER} sampler; "
                             f"drop --sampler {sampler}")
    return derived.BUDGET_SAMPLER, budget


def check_arguments(sampler: str, pruner: str, objective: str, trials: int | None, seeds: int | None,
                    on: str | None, seed: list[int] | None = None) -> None:
    """The search's own flags, before anything is loaded."""
    if seeds is not None and seed:  # --seeds would silently win: say which one means what
        raise CurvbenchError("--seed and --seeds: give one; --seed S trains every trial with seed S (the first, "
                             "when repeated), --seeds N with each of seeds 0..N-1 and scores the median")
    if sampler not in SAMPLERS:
        raise CurvbenchError(f"--sampler: unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise CurvbenchError(f"--pruner: unknown pruner {pruner!r}; known: {', '.join(PRUNERS)}")
    if objective not in ("best", "final"):
        raise CurvbenchError(f"--objective: expected best or final, got {objective!r}")
    if seeds is not None and not 1 <= seeds <= 10_000:
        raise CurvbenchError(f"--seeds: expected an integer from 1 to 10000, got {seeds}")
    if trials is not None and not 1 <= trials <= 1_000_000:
        raise CurvbenchError(f"--trials: expected an integer from 1 to 1000000, got {trials}")
    if on is not None and on not in ("val", "test"):
        raise CurvbenchError(f"--on: expected val or test, got {on!r}")


def check_writable_file(path: str, flag: str) -> None:
    """Fail now, not after an hour of training, when `path` cannot be written."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise CurvbenchError(f"{flag} {path}: is a folder; expected a file name")
    if not p.parent.is_dir():
        raise CurvbenchError(f"{flag} {path}: the folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CurvbenchError(f"{flag} {path}: not writable")


def write_best_recipe(path: str, recipe: Recipe, results: list[TuneResult]) -> None:
    """A recipe runnable as it is: every entry of `recipe`, the tuned ones with their best hyperparameters."""
    from pathlib import Path

    import yaml

    text = yaml.safe_dump(best_recipe(recipe, results), sort_keys=False)
    Path(path).write_text(f"# best hyperparameters found by curvbench tune on {recipe.source}\n" + text)


def tune(
    recipe: Recipe,
    tracker,
    reporter,
    sampler: str = "grid",
    trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    objective: str = "best",
    on: str | None = None,
    pruner: str = "none",
    seed: int = 0,
    seeds: int | None = None,
    warn=None,
    note=None,
) -> list[TuneResult]:
    """Search each method entry's space. `seeds`: train every trial with seeds 0..N-1 (a child run each) and
    score it by the median; default the recipe's first seed. Once everything is checked, `warn(message)` is told
    when trials are scored on the test split, and `note(message)` when on a validation split held out of train."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spaces = recipe.search
    missing = [m.name for m in recipe.methods if not spaces.get(m.name)]
    if missing:
        raise CurvbenchError(f"{recipe.source}: no search space for {', '.join(missing)}; add search.{missing[0]} "
                             f"to the recipe or pass --space {missing[0]}.lr=0.1,0.03")
    open_storage(storage)  # a storage that cannot be used fails before any data is loaded
    device, task = prepare(recipe)
    split = on or recipe.default_split()
    if split not in task.splits or split == "train":
        raise CurvbenchError(f"--on {split}: trials can be scored on val (when training.validation holds part of "
                             f"train out) or test; this task has {', '.join(s for s in task.splits if s != 'train')}")
    key = record.split_metric(split, recipe.task.metric)
    run_seeds = trial_seeds(recipe, seeds)
    if split == "test" and warn is not None:  # after every check: an error line is never preceded by a warning
        warn(f"trials are scored on the test split ({recipe.source} holds out no validation data; set "
             f"training.validation to tune on val)")
    if split == "val" and note is not None and not spec_of(recipe.task).has_val:
        note(f"trials are scored on val: {recipe.training.validation:.0%} of train held out (the task has no "
             f"validation split of its own; --on test scores them on test)")
    results = []
    for entry in recipe.methods:
        space = spaces[entry.name]
        from curvbench import methods as registry

        integer = {h.name for h in registry.get(entry.method).hparams if getattr(h.check, "integer", False)}
        name = study_name_of(recipe, entry, sampler, study_name)
        settings = score_settings(recipe, entry, space, objective, key, run_seeds)
        study = open_study(name, storage, "maximize", make_sampler(sampler, seed), fingerprint(settings),
                           FINGERPRINT_CLASH, make_pruner(pruner), settings)
        points = spaces_mod.grid_points(space) if sampler == "grid" else None
        budget = budget_of(trials, points)
        parent = None
        if tracker is not None:
            parent = shared_parent(tracker, study, storage, experiment_name(recipe),
                                   f"tune-{recipe.task.dataset}-{entry.name} ({name})", {
                "sampler": sampler, "trials": budget, "objective": f"{objective} {key}", "pruner": pruner,
                "study": name, record.SCORED_ON: split, "seeds": ",".join(map(str, run_seeds)),
                **{f"{record.SPACE_PARAM}{k}": v for k, v in space.items()}}, {
                record.KIND: record.TUNE, record.TASK: recipe.task.dataset, record.METHOD: entry.method,
                record.ENTRY: entry.name, record.STUDY: name, record.RECIPE: recipe.name,
                record.RECIPE_HASH: recipe.digest(), record.SCORED_ON: split,
                record.SEEDS_PER_TRIAL: len(run_seeds)})

        def status() -> None:
            reporter.search_status(f"tune {entry.name}", *standing(study, budget))

        def run(trial, params) -> None:
            status()  # this trial now counts as running
            _run_trial(recipe, task, entry, params, trial, study, device, tracker, reporter, parent, key, objective,
                       run_seeds)
            status()

        status()
        run_study(study, storage, points, lambda trial: spaces_mod.suggest(trial, space, integer), run, parent,
                  more=lambda: standing(study, budget)[2] > 0, what="grid point")  # trials running count
        finished, complete, best = outcome_of(study)
        held = held_elsewhere(study)
        if parent is not None:
            parent.log_metrics({record.TRIALS_RUN: len(finished), record.SEARCH_SECONDS: search_seconds(study)}, step=0)
            if best is not None:
                parent.log_metrics({record.BEST_SCORE: best.value, record.TRIALS_COMPLETE: len(complete),
                                    record.TRIALS_PRUNED: len(finished) - len(complete)}, step=0)
                # tags, not params: a resumed search may find a better point, and MLflow params never change
                parent.set_tags({record.BEST_TRIAL: best.number, record.BEST_RUN_ID: best.user_attrs.get(record.TRIAL_RUN_ID, ""),
                                 **{f"best.{k}": v for k, v in best.params.items()}})
            parent.set_tags({record.SEARCH_STATE: f"partial: {len(held)} trial(s) still held by other workers"
                             if held else "complete"})
            parent.end("FINISHED")
        results.append(TuneResult(entry.name, name, best and dict(best.params), best and best.value, finished,
                                  parent and parent.run_id, split, key, len(run_seeds), held))
    return results


def study_progress(recipe: Recipe, sampler: str, trials: int | None, storage: str | None,
                   study_name: str | None) -> dict[str, tuple[int, int, int, float | None]]:
    """Per entry, read from the shared study: trials finished, running, left, best score (what several workers'
    combined progress shows). A study not created yet counts as nothing done."""
    import optuna

    spaces = recipe.search
    store = open_storage(storage)
    out = {}
    for entry in recipe.methods:
        points = spaces_mod.grid_points(spaces[entry.name]) if sampler == "grid" else None
        budget = budget_of(trials, points)
        try:
            study = optuna.load_study(study_name=study_name_of(recipe, entry, sampler, study_name), storage=store)
        except KeyError:
            out[entry.name] = (0, 0, budget, None)
            continue
        out[entry.name] = standing(study, budget)
    return out


def search_seconds(study) -> float:
    """Training seconds the search has cost so far: every finished or failed trial's runs, every seed."""
    return float(sum(t.user_attrs.get(record.TRIAL_TRAIN_SECONDS, 0.0) for t in study.get_trials(deepcopy=False)))


def standing(study, budget: int) -> tuple[int, int, int, float | None]:
    """Trials finished (complete or pruned), running, left of `budget`, and the best score so far."""
    from optuna.trial import TrialState

    ts = study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ts)
    running = sum(t.state == TrialState.RUNNING for t in ts)
    scored = [t.value for t in ts if t.state == TrialState.COMPLETE and t.value is not None]
    return finished, running, max(0, budget - finished - running), max(scored) if scored else None


def outcome_of(study) -> tuple[list, list, object]:
    """The finished trials (complete or pruned), the complete ones with a score, and the best of those."""
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
    return finished, complete, max(complete, key=lambda t: t.value) if complete else None


def study_results(recipe: Recipe, sampler: str, storage: str | None, study_name: str | None, on: str | None,
                  seeds: int | None) -> list[TuneResult]:
    """What every worker's studies hold, read back after they are done: the best trial and the parent run."""
    import optuna

    store = open_storage(storage)
    split = on or recipe.default_split()
    key = record.split_metric(split, recipe.task.metric)
    out = []
    for entry in recipe.methods:
        name = study_name_of(recipe, entry, sampler, study_name)
        try:
            study = optuna.load_study(study_name=name, storage=store)
        except KeyError:
            continue
        finished, _, best = outcome_of(study)
        out.append(TuneResult(entry.name, name, best and dict(best.params), best and best.value, finished,
                              study.user_attrs.get(record.STUDY_PARENT), split, key, len(trial_seeds(recipe, seeds)),
                              held_elsewhere(study)))
    return out


def _run_trial(recipe, task, entry, params, trial, study, device, tracker, reporter, parent, key, objective,
               seeds=None):
    """Train the trial's point with each seed (a child run each); its score is the median over the seeds.
    Pruning listens to the first seed's epochs; a seed that diverges ends the trial as pruned (diverged)."""
    import statistics

    from optuna.trial import TrialState

    seeds = seeds or [recipe.training.seeds[0]]
    trial_entry = MethodEntry(entry.name, entry.method, {**entry.hparams, **params})

    def prune_check(epoch_record):
        if key in epoch_record.metrics:
            trial.report(epoch_record.metrics[key], epoch_record.epoch)
            if trial.should_prune():
                raise engine.StopTraining(f"pruned after epoch {epoch_record.epoch}")

    scores, run_ids, seconds = [], [], 0.0
    for i, seed in enumerate(seeds):
        # Ctrl-C raises Interrupted through here: the study loop fails the trial, and its point runs again
        outcome = run_one(recipe, task, trial_entry, seed, device, tracker, reporter,
                          parent_run_id=parent and parent.run_id,
                          extra_tags={record.KIND: record.TRIAL_RUN, record.TRIAL: trial.number,
                                      record.STUDY: study.study_name},
                          run_name=display_name(recipe, trial_entry, seed, params, f"(trial {trial.number})"),
                          epoch_hook=prune_check if i == 0 else None)
        if outcome.run is not None and outcome.run.pending:  # its tracking server was away when it ended
            trial.set_user_attr(record.TRIAL_MLFLOW, "held: sent when the tracking server answers, else kept in "
                                          "mlruns/unlogged/ when the command ends")
        seconds += outcome.train_seconds  # what the search cost, pruned and diverged trials included
        trial.set_user_attr(record.TRIAL_TRAIN_SECONDS, seconds)
        if outcome.run_id:
            run_ids.append(outcome.run_id)
            trial.set_user_attr(record.TRIAL_RUN_ID, run_ids[0])
            trial.set_user_attr(record.TRIAL_RUN_IDS, run_ids)
        if outcome.status == engine.DIVERGED:
            trial.set_user_attr(record.TRIAL_REASON, "diverged" + (f" (seed {seed})" if len(seeds) > 1 else ""))
            study.tell(trial, state=TrialState.PRUNED)
            return
        if outcome.result is not None and outcome.result.stopped_early:
            trial.set_user_attr(record.TRIAL_REASON, outcome.reason)
            study.tell(trial, state=TrialState.PRUNED)
            return
        value = objective_value(outcome, key, objective)
        if value is None:
            study.tell(trial, state=TrialState.FAIL)
            return
        scores.append(value)
    trial.set_user_attr(record.TRIAL_SEED_SCORES, scores)
    study.tell(trial, statistics.median(scores))


def result_line(res: TuneResult, uri: str) -> str:
    """`sgd: best lr=0.1, weight_decay=0 with val_accuracy 0.9812 (best over epochs, median of 2 seeds); parent run
    ID in URI`: what a search found, on which split, and where its runs are."""
    seeds = f", median of {res.seeds} seeds" if res.seeds > 1 else ""
    where = f"; parent run {res.parent_run_id} in {uri}" if res.parent_run_id else ""
    if res.held:
        where += (f". PARTIAL: {len(res.held)} trial(s) are still held by other workers; the last worker to "
                  f"finish prints the complete result: " + "; ".join(res.held))
    if res.best_params is None:
        return f"{res.entry}: no trial finished with a score (scored on {res.scored_on}){where}"
    chosen = ", ".join(f"{k}={v}" for k, v in res.best_params.items())
    return f"{res.entry}: best {chosen} with {res.metric} {res.best_value:.4f} (scored on {res.scored_on}{seeds}){where}"


def best_recipe(recipe: Recipe, results: list[TuneResult]) -> dict:
    """The recipe with each tuned method's hyperparameters replaced by the best found: `train` takes it as is."""
    d = recipe.to_dict()
    for r in results:
        if r.best_params:
            d["methods"][r.entry].update(r.best_params)
    d["description"] = (d.get("description") or "") + " (tuned: " + ", ".join(
        f"{r.entry} {r.best_value:.4f}" for r in results if r.best_value is not None) + ")"
    return d


def dry_run(recipe: Recipe, opts: SearchOptions) -> list[PlannedSearch]:
    """What a run would do: per method, the grid points still to run, or how many trials a sampler would draw."""
    import optuna
    from optuna.trial import TrialState

    spaces = recipe.search
    key = record.split_metric(opts.on or recipe.default_split(), recipe.task.metric)
    out = []
    for entry in recipe.methods:
        space = spaces.get(entry.name)
        if not space:
            raise CurvbenchError(f"{recipe.source}: no search space for {entry.name}")
        name = study_name_of(recipe, entry, opts.sampler, opts.study)
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(opts.storage))
            if record.STUDY_FINGERPRINT in study.user_attrs:  # a dry run only reads; it marks nothing
                settings = score_settings(recipe, entry, space, opts.objective, key, trial_seeds(recipe, opts.seeds))
                studies.check_fingerprint(study, fingerprint(settings), opts.storage, FINGERPRINT_CLASH, settings)
            finished = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))]
        except KeyError:
            finished = []
        if opts.sampler == "grid":
            todo = [p for p in spaces_mod.grid_points(space) if not any(same_point(p, q) for q in finished)]
            todo = todo[:opts.trials] if opts.trials is not None else todo
            out.append(PlannedSearch(entry.name, len(todo), tuple(todo)))
        else:
            n = max(0, (opts.trials or DEFAULT_TRIALS) - len(finished))
            out.append(PlannedSearch(entry.name, n, None, f"{opts.sampler} from {space}"))
    return out


def seconds_per_step(client, task: str, method: str, batch_size: int) -> tuple[float | None, int]:
    """The median training seconds per step of the store's finished runs of `method` on `task` at `batch_size`
    (up to 50 recent ones), and how many there were: what a dry run times its trials by."""
    import statistics

    found = []
    for exp in client.search_experiments():
        found += client.search_runs([exp.experiment_id], f"tags.{record.TASK} = '{task}' and tags.{record.METHOD} = "
                                    f"'{method}' and attributes.status = 'FINISHED'", max_results=50)
    per_step = [r.data.metrics[record.TRAIN_SECONDS] / r.data.metrics[record.STEPS] for r in found
                if r.data.params.get("training.batch_size") == str(batch_size)
                and r.data.metrics.get(record.STEPS) and record.TRAIN_SECONDS in r.data.metrics]
    return (statistics.median(per_step) if per_step else None), len(per_step)


def dry_run_cost(recipe: Recipe, entry: MethodEntry, n_trials: int, seeds: int | None, steps_per_epoch: int,
                 client=None) -> str:
    """What `n_trials` trials of `entry` will cost: trials x seeds x epochs x steps, and the time at the step cost
    of earlier runs of the same task, method and batch size in the store, when there are any."""
    n_seeds = len(trial_seeds(recipe, seeds))
    epochs, batch = recipe.training.epochs, recipe.training.batch_size
    steps = n_trials * n_seeds * epochs * steps_per_epoch
    text = (f"{n_trials} trial(s) x {n_seeds} seed(s) x {epochs} epoch(s) x {steps_per_epoch} steps = {steps:,} "
            f"steps")
    per_step, n = seconds_per_step(client, recipe.task.dataset, entry.method, batch) if client else (None, 0)
    if per_step is None:
        return text + f"; no finished {entry.method} run on {recipe.task.dataset} at batch {batch} in the store to " \
                      f"time them by"
    seconds = steps * per_step
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"
    return text + (f", about {took} of training at {per_step * 1e3:.1f} ms a step (the median of {n} earlier "
                   f"run(s); evaluation not counted)")
