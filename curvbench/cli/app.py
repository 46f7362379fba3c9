"""The `curvbench` command line. Thin: parse arguments, call the library, turn errors into one line.

torch and mlflow are imported inside the commands only, so `curvbench --help` is instant."""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain help: flags with their metavars (N, URI, A,B), never Python type names
    no_args_is_help=True,
    help="Train networks with different optimizers, compare them, and track every run in MLflow.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

from curvbench.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_UNLOGGED


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly(func):
    """Any CurvbenchError becomes `error: <one line>` and its exit code; no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import os
        import signal

        from curvbench.errors import CurvbenchError

        def terminate(signum, frame):  # a kill ends the current run as KILLED, exactly as Ctrl-C does
            from curvbench.errors import Terminated

            raise Terminated(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, terminate)
        if os.environ.get("CURVBENCH_WORKER"):  # one of tune --workers: stop at the next safe point, not mid-write
            from curvbench import stopping

            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, lambda signum, frame: stopping.request(signal.Signals(signum).name))
        if os.environ.get("CURVBENCH_DEBUG"):  # tracebacks as they are, the exit codes as without it
            import traceback

            try:
                return _settled(func(*args, **kwargs))
            except CurvbenchError as e:
                traceback.print_exc()
                _fail(str(e), e.exit_code)
            finally:
                _settle_tracking()
        try:
            return _settled(func(*args, **kwargs))
        except CurvbenchError as e:
            _fail(str(e), e.exit_code)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except RecursionError:
            _fail("the input is nested too deeply to read")
        except Exception as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
            from curvbench.tracking.stores import explain

            why = explain(e)
            if why is not None:
                _fail(why, 2)
            _fail(f"internal error ({e.__class__.__name__}: {' '.join(str(e).split())[:300]}); "
                  f"set CURVBENCH_DEBUG=1 for the traceback", 1)
        finally:
            _settle_tracking()

    return wrapper


def _settled(result):
    """A command's work is done: runs still holding writes are settled, and runs that never reached the tracking
    store make it exit 3 (with or without CURVBENCH_DEBUG), not 0."""
    kept = _settle_tracking()
    if kept:  # the work is done, but not all of it is in the store: not a plain success
        _fail(f"{kept} run(s) did not reach the tracking store; their writes are kept in mlruns/unlogged/: "
              f"`curvbench resend` sends them once the store answers", EXIT_UNLOGGED)
    return result


def _settle_tracking() -> int:
    """Runs that ended while their tracking server was away: one last try, else kept in mlruns/unlogged/ (how
    many were kept)."""
    tracked_run = sys.modules.get("curvbench.tracking.tracked_run")  # only where the command tracked anything
    return tracked_run.settle_held() if tracked_run is not None else 0


# ---- options shared by the commands that train (gathered into one recipe.RunFlags)
EpochsOpt = typer.Option(None, "--epochs", help="Override training.epochs.", metavar="N")
BatchOpt = typer.Option(None, "--batch-size", help="Override training.batch_size.", metavar="N")
MethodsOpt = typer.Option(None, "--methods", help="Comma-separated method entries to run (e.g. sgd,lion).", metavar="A,B")
SeedOpt = typer.Option(None, "--seed", help="Seed(s) to run; repeat for several. Overrides training.seeds.", metavar="S")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu or cuda.", metavar="DEVICE")
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads for torch.", metavar="N")
DataDirOpt = typer.Option(None, "--data-dir", help="Folder holding the datasets (else $CURVBENCH_DATA).", metavar="DIR")
NoDownloadOpt = typer.Option(False, "--no-download", help="Never try to download missing data.", metavar=" ")
SetOpt = typer.Option(None, "--set", help="Override any recipe field: --set methods.sgd.lr=0.05", metavar="KEY=VALUE")
UriOpt = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (else $MLFLOW_TRACKING_URI, else mlruns/).", metavar="URI")
ExperimentOpt = typer.Option(None, "--experiment", help="MLflow experiment name (default: the task).", metavar="NAME")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print the final summary only (no progress).", metavar=" ")


def _open_tracker(uri):
    """The store, checked; runs left RUNNING by dead processes of this host are ended, and said so."""
    from curvbench.tracking.client import Tracker

    tracker = Tracker(uri)
    for line in tracker.reaped:
        typer.echo(f"note: ended as FAILED the run {line}", err=True)
    return tracker


def _reporter(quiet: bool):
    """--quiet: the final summary only; a terminal: live bars; a log or a pipe: a line per epoch (stderr)."""
    from curvbench.training.progress import LineReporter, QuietReporter, RichReporter

    if quiet:
        return QuietReporter()
    return RichReporter() if sys.stderr.isatty() else LineReporter()


@app.command(epilog="Example: curvbench train quickstart --methods sgd,kfac --epochs 3")
@friendly
def train(
    recipes: List[str] = typer.Argument(..., metavar="RECIPE", hidden=True, show_default=False),
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    methods: Optional[str] = MethodsOpt,
    seed: Optional[List[int]] = SeedOpt,
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_download: bool = NoDownloadOpt,
    set_: Optional[List[str]] = SetOpt,
    tracking_uri: Optional[str] = UriOpt,
    experiment: Optional[str] = ExperimentOpt,
    quiet: bool = QuietOpt,
):
    """Train every method of each recipe, one MLflow run per method and seed.

    RECIPE: a recipe name (quickstart, mnist, cifar, ...) or a path to a recipe file."""
    # check every recipe before the first run starts
    flags = _flags(epochs=epochs, batch_size=batch_size, seeds=seed, device=device, threads=threads,
                   data_dir=data_dir, no_download=no_download, sets=set_, methods=methods, experiment=experiment)
    loaded = [_load_recipe(r, flags) for r in recipes]

    from curvbench.training.progress import console, summary_table
    from curvbench.training.runner import Interrupted, run_recipe

    tracker = _open_tracker(tracking_uri)
    reporter = _reporter(quiet)
    outcomes = []
    try:
        for r in loaded:
            outcomes += run_recipe(r, tracker, reporter)
    except Interrupted as e:
        reporter.close()
        outcomes += e.outcomes
        console.print(summary_table(outcomes))
        _fail(f"{e.reason}: the current run was ended as KILLED; everything logged so far is kept", EXIT_INTERRUPTED)
    reporter.close()
    console.print(summary_table(outcomes))
    console.print(f"runs stored in {tracker.shown_uri}; open them with `curvbench ui`")
    bad = [o for o in outcomes if o.status != "FINISHED"]
    if bad:
        from curvbench.training.progress import describe

        _fail("; ".join(f"{o.name} {describe(o)}" for o in bad), EXIT_DIVERGED)


def _load_recipe(ref: str, flags, keep_methods: bool = True):
    from curvbench.recipe import loading as recipes_mod

    return recipes_mod.load(ref, flags.overrides(keep_methods))


def _flags(**kw):
    from curvbench.recipe.loading import RunFlags

    return RunFlags(**kw)


@app.command(epilog="Example: curvbench tune mnist --methods sam,lion --seeds 2 --data-dir ~/data")
@friendly
def tune(
    recipe: str = typer.Argument(..., metavar="RECIPE", hidden=True, show_default=False),
    methods: Optional[str] = MethodsOpt,
    sampler: str = typer.Option("grid", "--sampler", help="grid, random, halton or tpe.", metavar="SAMPLER"),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trials per method (default: the whole grid, or 20).", metavar="N"),
    objective: str = typer.Option("best", "--objective", help="best or final value of the metric.", metavar="WHICH"),
    on: Optional[str] = typer.Option(None, "--on", help="Split scored: val (default when there is one) or test.", metavar="SPLIT"),
    pruner: str = typer.Option("none", "--pruner", help="none, median or halving.", metavar="PRUNER"),
    space: Optional[List[str]] = typer.Option(None, "--space", help="sgd.lr=0.1,0.03 or sgd.lr=1e-3:1:log (repeat).", metavar="ENTRY.HP=V1,V2"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite:///mlruns/optuna.db).", metavar="URL"),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default RECIPE-METHOD-SAMPLER).", metavar="NAME"),
    out: Optional[str] = typer.Option(None, "--out", help="Write a recipe with the best hyperparameters here.", metavar="PATH"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the trials it would run, run nothing.", metavar=" "),
    sampler_seed: int = typer.Option(0, "--sampler-seed", help="Seed of the sampler.", metavar="N"),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Train each trial with seeds 0..N-1 and score it by the median (default: the recipe's first seed).", metavar="N"),
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    seed: Optional[List[int]] = SeedOpt,
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_download: bool = NoDownloadOpt,
    set_: Optional[List[str]] = SetOpt,
    tracking_uri: Optional[str] = UriOpt,
    experiment: Optional[str] = ExperimentOpt,
    quiet: bool = QuietOpt,
    workers: int = typer.Option(1, "--workers", help="Worker processes sharing the study (each its share of the CPU cores, or one of --devices).", metavar="N"),
    devices: Optional[str] = typer.Option(None, "--devices", help="One device per worker: cuda:0,cuda:1.", metavar="A,B"),
    budget: Optional[int] = typer.Option(None, "--budget", help="Equal budgets: K trials per method, all drawn by the scrambled Halton sampler (as --sampler halton --trials K).", metavar="K"),
):
    """Search hyperparameters: one MLflow parent run per method, a child run per trial; resumable.

    RECIPE: a recipe name or path; its `search` section is the space (or --space)."""
    from curvbench.cli import workers as pool
    from curvbench.search import tune as tuning

    opts = tuning.SearchOptions.checked(budget, seed, sampler=sampler, trials=trials, objective=objective, on=on,
                                        pruner=pruner, storage=storage, study=study, sampler_seed=sampler_seed,
                                        seeds=seeds, space=tuple(space or ()), out=out)
    pool.devices_of(workers, devices)  # --workers 0, a device list of the wrong length: refused before anything
    flags = _flags(epochs=epochs, batch_size=batch_size, seeds=seed, device=device, threads=threads,
                   data_dir=data_dir, no_download=no_download, sets=set_, methods=methods, experiment=experiment)
    r = tuning.search_recipe(recipe, flags.overrides(), opts)
    if dry_run:
        _print_search_plan(r, opts, _open_tracker(tracking_uri).client)
        return
    from curvbench.training.progress import console, tune_table
    from curvbench.training.runner import Interrupted

    if workers > 1 or devices:
        pool.tune_pool(r, opts, workers, devices, _open_tracker(tracking_uri), _reporter(quiet))
        return
    tracker = _open_tracker(tracking_uri)
    reporter = _reporter(quiet)
    try:
        results = tuning.run_search(r, opts, tracker, reporter, warn=lambda m: typer.echo(f"warning: {m}", err=True),
                                    note=lambda m: typer.echo(f"note: {m}", err=True))
    except Interrupted as e:
        reporter.close()
        _fail(f"{e.reason}: finished trials are kept; run the same command again to resume", EXIT_INTERRUPTED)
    reporter.close()
    for res in results:
        console.print(tune_table(res))
        console.print(tuning.result_line(res, tracker.shown_uri))
    if out:  # every entry of the recipe goes into the output, the tuned ones with their best values
        tuning.write_best_recipe(out, _load_recipe(recipe, flags, keep_methods=False), results)
        console.print(f"best hyperparameters written to {out}")


def _print_search_plan(r, opts, client) -> None:
    """`tune --dry-run`: per entry, the points still to run (or a sampler's count) and what they will cost."""
    from curvbench.search import tune as tuning
    from curvbench.training.runner import prepare

    steps_per_epoch = prepare(r)[1].steps_per_epoch(r.training.batch_size)  # the data, not a model, is loaded
    entries = {e.name: e for e in r.methods}
    for plan in tuning.dry_run(r, opts):
        typer.echo(plan.text())
        for p in plan.points or ():
            typer.echo("    " + ", ".join(f"{k}={v}" for k, v in p.items()))
        if plan.n_trials:
            typer.echo("    cost: " + tuning.dry_run_cost(r, entries[plan.entry], plan.n_trials, opts.seeds,
                                                          steps_per_epoch, client))


@app.command("to-target", epilog="Example: curvbench to-target cifar --acc 0.75 --seeds 3")
@friendly
def to_target(
    recipe: str = typer.Argument(..., metavar="RECIPE", hidden=True, show_default=False),
    acc: Optional[float] = typer.Option(None, "--acc", help="Target value of the metric (default: training.target).", metavar="A"),
    methods: Optional[str] = MethodsOpt,
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Run seeds 0..N-1 (default: the recipe's seeds).", metavar="N"),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Budget in epochs (default: training.epochs).", metavar="N"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every STEPS steps (default: each epoch).", metavar="STEPS"),
    on: Optional[str] = typer.Option(None, "--on", help="val (default when there is one) or test.", metavar="SPLIT"),
    batch_size: Optional[int] = BatchOpt,
    seed: Optional[List[int]] = SeedOpt,
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_download: bool = NoDownloadOpt,
    set_: Optional[List[str]] = SetOpt,
    tracking_uri: Optional[str] = UriOpt,
    experiment: Optional[str] = ExperimentOpt,
    quiet: bool = QuietOpt,
    storage: Optional[str] = typer.Option(None, "--storage", help="Share the (method, seed) runs as a queue in this Optuna storage, for workers on several machines.", metavar="URL"),
    workers: int = typer.Option(1, "--workers", help="Worker processes sharing the runs (each its share of the CPU cores, or one of --devices).", metavar="N"),
    devices: Optional[str] = typer.Option(None, "--devices", help="One device per worker: cuda:0,cuda:1.", metavar="A,B"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Entry the others are tested against (default: sgd when run).", metavar="ENTRY"),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="Folder of the queued runs' epoch checkpoints, from which a killed run resumes (default: checkpoints/ beside a SQLite --storage).", metavar="DIR"),
):
    """Train each method until its metric first reaches the target: training seconds, steps and epochs to it,
    over every seed (a seed that misses counts as not reached), each tested against the baseline.

    RECIPE: a recipe name or path; its training.target is the default target."""
    from curvbench.cli import workers as pool
    from curvbench.search.to_target import baseline_of, check_arguments

    check_arguments(acc, eval_every, seeds, on, seed)
    pool.devices_of(workers, devices)  # --workers 0, a device list of the wrong length: refused before anything
    seed_list = list(range(seeds)) if seeds is not None else seed
    flags = _flags(epochs=max_epochs, batch_size=batch_size, seeds=seed_list, device=device, threads=threads,
                   data_dir=data_dir, no_download=no_download, sets=set_, methods=methods, experiment=experiment)
    r = _load_recipe(recipe, flags)
    # checked here, before any run; the library resolves the default again (it would take a resolved "sgd" for
    # one the user named, and refuse it with a single seed)
    shown_baseline = baseline_of([m.name for m in r.methods], baseline, len(r.training.seeds))
    from curvbench.search.to_target import run_to_target, summary_markdown, target_of
    from curvbench.training.progress import console
    from curvbench.training.runner import Interrupted

    if workers > 1 or devices:
        pool.to_target_pool(r, workers, devices, storage, acc, on, shown_baseline, _open_tracker(tracking_uri),
                            _reporter(quiet))
        return
    tracker = _open_tracker(tracking_uri)
    reporter = _reporter(quiet)
    try:
        summaries, parent, key = run_to_target(r, tracker, reporter, acc, eval_every, on, storage, baseline,
                                               checkpoints)
    except Interrupted as e:
        reporter.close()
        _fail(f"{e.reason}: the current run was ended as KILLED; everything logged so far is kept", EXIT_INTERRUPTED)
    reporter.close()
    from rich.markdown import Markdown

    console.print(Markdown(summary_markdown(summaries, target_of(r, acc), key, shown_baseline)))
    console.print(f"parent run {parent} in {tracker.shown_uri}")


@app.command(epilog="Example: curvbench report --task mnist --out report/")
@friendly
def report(
    out: str = typer.Option("report", "--out", help="Folder for report.md, report.html and the figures.", metavar="PATH"),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="Only this MLflow experiment.", metavar="NAME"),
    parent: Optional[List[str]] = typer.Option(None, "--parent", help="Only the children of this run (a tune or to-target); repeat for several.", metavar="RUN_ID"),
    task: Optional[str] = typer.Option(None, "--task", help="Only this task.", metavar="TASK"),
    methods: Optional[str] = typer.Option(None, "--methods", help="Only these method entries (comma-separated).", metavar="A,B"),
    since: Optional[str] = typer.Option(None, "--since", help="Only runs started since this date (ISO 8601).", metavar="DATE"),
    tracking_uri: Optional[str] = UriOpt,
    no_log: bool = typer.Option(False, "--no-log", help="Do not log the report as an MLflow run.", metavar=" "),
    claims: Optional[str] = typer.Option(None, "--claims", help="Judge the claims of this file (a path, or a name such as thesis-claims).", metavar="FILE"),
    baseline: str = typer.Option("sgd", "--baseline", help="Entry each setting's time to target is tested against.", metavar="ENTRY"),
    step_costs: Optional[List[str]] = typer.Option(None, "--step-costs", help="Price steps to target in quiet seconds with this table of benchmarks/step_cost.py --json (one per task and batch size; repeat for several).", metavar="FILE"),
):
    """Tables and figures from the tracked runs (Markdown, HTML, PNG), logged as a report run."""
    import pathlib

    from curvbench.errors import CurvbenchError
    from curvbench.report import pages
    from curvbench.report.collect import collect
    from curvbench.report.step_costs import load_all
    from curvbench.report.tables import markdown_table, search_table
    from curvbench.tracking.client import Tracker
    from curvbench.training.progress import console

    claim_list = None
    if claims:
        from curvbench.report import claims as claims_mod

        claim_list = claims_mod.load(claims)
    priced = load_all(step_costs)
    tracker = Tracker(tracking_uri, write=False)  # reading needs no lock: a read-only store works
    wanted = [m.strip() for m in methods.split(",")] if methods else None
    runs = collect(tracker.client, experiment, parent, task, wanted, since)
    if not runs:
        sel = ", ".join(f"{k}={v}" for k, v in (("experiment", experiment), ("parent", parent), ("task", task),
                                                ("methods", methods), ("since", since)) if v) or "no filters"
        raise CurvbenchError(f"no training runs with metrics match ({sel}) in {tracker.shown_uri}; nothing written")
    folder = pathlib.Path(out)
    pages.check_out_folder(folder)
    written = pages.write_report(runs, folder, claim_list, baseline, priced)
    from rich.markdown import Markdown

    console.print(Markdown(markdown_table(written.rows)))
    if written.searches:
        console.print(Markdown(search_table(written.searches)))
    if written.verdicts is not None:
        from curvbench.report import claims as claims_mod

        console.print(Markdown(claims_mod.markdown(written.verdicts)))
    figures = written.figures
    console.print(f"{len(runs)} runs -> {folder / 'report.md'}, {folder / 'report.html'}, {len(figures)} figures")
    if not no_log:
        try:
            rid = pages.log_report(Tracker(tracking_uri), folder, figures, {
                "experiment": experiment, "parent": parent, "task": task, "methods": methods, "since": since})
        except CurvbenchError as e:  # a read-only store: the report stands, only its run is missing
            typer.echo(f"warning: the report was written but not logged ({e}); --no-log skips logging", err=True)
        else:
            console.print(f"logged as run {rid} in experiment curvbench-reports")


@app.command(epilog="Example: curvbench verdict mnist-verdict --data-dir ~/data --budget 12 --out verdict/mnist")
@friendly
def verdict(
    recipe: str = typer.Argument(..., metavar="RECIPE", hidden=True, show_default=False),
    budget: int = typer.Option(12, "--budget", help="Trials per method in the equal-budget search (scrambled Halton).", metavar="K"),
    tune_epochs: int = typer.Option(3, "--tune-epochs", help="Epochs of each search trial.", metavar="N"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Entry the others are tested against (default: sgd when run).", metavar="ENTRY"),
    claims: str = typer.Option("thesis-claims", "--claims", help="Claims file judged in the report ('' for none).", metavar="FILE"),
    out: str = typer.Option("verdict", "--out", help="Folder for the tuned recipe and the report.", metavar="PATH"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage of the resumable steps (default sqlite:///mlruns/optuna.db).", metavar="URL"),
    methods: Optional[str] = MethodsOpt,
    seed: Optional[List[int]] = SeedOpt,
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_download: bool = NoDownloadOpt,
    set_: Optional[List[str]] = SetOpt,
    tracking_uri: Optional[str] = UriOpt,
    experiment: Optional[str] = ExperimentOpt,
    quiet: bool = QuietOpt,
):
    """The whole verdict protocol for a task, resumable: to-target under the recipe's settings, an equal-budget
    search on validation, to-target with the winners, then the report with each claim judged.

    RECIPE: a recipe with a target, seeds and search ranges (mnist-verdict, fashion-mnist-verdict, conll-verdict)."""
    import pathlib

    from curvbench.search import verdict as verdicts
    from curvbench.training.progress import console
    from curvbench.training.runner import Interrupted

    plan = verdicts.VerdictPlan(budget=budget, tune_epochs=tune_epochs, storage=storage, baseline=baseline,
                                out=pathlib.Path(out), claims=claims or None)
    verdicts.check_plan(plan)
    flags = _flags(seeds=seed, device=device, threads=threads, data_dir=data_dir, no_download=no_download,
                   sets=set_, methods=methods, experiment=experiment)
    tracker = _open_tracker(tracking_uri)
    reporter = _reporter(quiet)
    try:
        done = verdicts.run(recipe, flags.overrides(), plan, tracker, reporter)
    except Interrupted as e:
        reporter.close()
        _fail(f"{e.reason}: the current run was ended as KILLED; the same command resumes where it stopped",
              EXIT_INTERRUPTED)
    reporter.close()
    from rich.markdown import Markdown

    from curvbench.search.to_target import summary_markdown

    for step in ("thesis", "tuned"):
        summaries, parent, key = done[step]
        console.print(Markdown(f"**{step}** (parent run {parent})\n\n"
                               + summary_markdown(summaries, done["target"], key, done["baseline"])))
    if done.get("claims") is not None:
        from curvbench.report import claims as claims_mod

        console.print(Markdown(claims_mod.markdown(done["claims"])))
    console.print(f"report: {plan.out / 'report.md'}, {plan.out / 'report.html'}; runs in {tracker.shown_uri}")


@app.command("scale-batch", epilog="Example: curvbench scale-batch mnist-verdict --batch-sizes 32,64,128,256 --methods sgd,kfac --data-dir ~/data")
@friendly
def scale_batch(
    recipe: str = typer.Argument(..., metavar="RECIPE", hidden=True, show_default=False),
    batch_sizes: str = typer.Option(..., "--batch-sizes", help="Increasing batch sizes: 32,64,128.", metavar="B1,B2"),
    budget: int = typer.Option(6, "--budget", help="Halton trials per method and batch size.", metavar="K"),
    tune_epochs: int = typer.Option(2, "--tune-epochs", help="Epochs of each search trial.", metavar="N"),
    rule: str = typer.Option("linear", "--rule", help="How the lr range moves with the batch: linear or sqrt.", metavar="RULE"),
    evals_per_epoch: int = typer.Option(10, "--evals-per-epoch", help="Evaluations an epoch while training to the target: the resolution of steps to target.", metavar="N"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage of the resumable steps (default sqlite:///mlruns/optuna.db).", metavar="URL"),
    methods: Optional[str] = MethodsOpt,
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds 0..N-1 to target at each batch size (default: the recipe's seeds).", metavar="N"),
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_download: bool = NoDownloadOpt,
    set_: Optional[List[str]] = SetOpt,
    tracking_uri: Optional[str] = UriOpt,
    experiment: Optional[str] = ExperimentOpt,
    quiet: bool = QuietOpt,
    workers: int = typer.Option(1, "--workers", help="Worker processes sharing the sweep (each its share of the CPU cores, or one of --devices).", metavar="N"),
    devices: Optional[str] = typer.Option(None, "--devices", help="One device per worker: cuda:0,cuda:1.", metavar="A,B"),
):
    """Steps to target across batch sizes, the learning rate tuned at each (equal budgets, on validation), and
    each method's critical batch size in `curvbench report`; resumable.

    RECIPE: a recipe with a target, seeds and a search range for lr at its own batch size."""
    from curvbench.cli import workers as pool
    from curvbench.search import scale_batch as scaling
    from curvbench.search.studies import DEFAULT_STORAGE
    from curvbench.search.to_target import check_arguments
    from curvbench.training.runner import Interrupted

    plan = scaling.ScalePlan(scaling.parse_batch_sizes(batch_sizes), budget, tune_epochs, rule, storage,
                             evals_per_epoch)
    scaling.check_plan(plan)
    check_arguments(None, None, seeds)
    pool.devices_of(workers, devices)  # --workers 0, a device list of the wrong length: refused before anything
    flags = _flags(seeds=list(range(seeds)) if seeds else None, device=device, threads=threads, data_dir=data_dir,
                   no_download=no_download, sets=set_, methods=methods, experiment=experiment)
    tracker = _open_tracker(tracking_uri)
    known = None
    if workers > 1 or devices:
        # this process then reads the sweep back as the workers ran it: with their threads, which are part of the
        # recipe each of its to-target queues was made under
        flags = dataclasses.replace(flags, threads=pool.worker_threads(workers))
        known = scaling.checked(recipe, flags.overrides(), plan)  # the recipe and the data, before any worker starts
        pool.scale_batch_pool(workers, devices, storage or DEFAULT_STORAGE, tracker, _reporter(quiet))
    reporter = _reporter(quiet)
    try:
        done = scaling.run(recipe, flags.overrides(), plan, tracker, reporter, known)
    except Interrupted as e:
        reporter.close()
        _fail(f"{e.reason}: the current run was ended as KILLED; the same command resumes where it stopped",
              EXIT_INTERRUPTED)
    reporter.close()
    for line in scaling.summary_lines(done, plan.skipped):
        typer.echo(line)  # plain: rich would read "[not reached, not reached]" as a style tag and drop it
    typer.echo(f"runs in {tracker.shown_uri}; `curvbench report --task TASK` draws steps against batch size")


def _print_views(uri: str, base: str) -> None:
    """Each curvbench experiment's runs, opened on its saved view of the key columns (tracking/ui_view)."""
    from curvbench.tracking.client import Tracker
    from curvbench.tracking.ui_view import VIEW_NAME, experiment_links

    links = experiment_links(Tracker(uri, write=False).client, base)
    if links:
        typer.echo(f"each experiment's runs with the key columns (the view \"{VIEW_NAME}\"):")
    for name, url in links:
        typer.echo(f"  {name}: {url}")


RecipeForListing = typer.Argument(None, metavar="RECIPE", hidden=True, show_default=False)


def _print_listing(lines: list[str], problems: list[str]) -> None:
    for line in lines:
        typer.echo(line)
    for line in problems:
        typer.echo(f"warning: {line}", err=True)


@app.command(epilog="Example: curvbench resend --tracking-uri http://mlflow.internal:5000")
@friendly
def resend(
    folder: str = typer.Option("mlruns/unlogged", "--folder", help="Folder of the kept runs.", metavar="DIR"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Store to send them to (default: the "
                                               "one each file names).", metavar="URI"),
):
    """Send the runs that never reached their tracking server (kept in mlruns/unlogged/) to the store now."""
    from curvbench.tracking.resend import resend as send

    done = send(folder, tracking_uri)
    for line in done.sent:
        typer.echo(f"sent {line}")
    typer.echo(f"{len(done.sent)} run(s) sent; their files moved to {folder}/sent/")
    if done.left:
        _fail(f"{len(done.left)} file(s) not sent: " + "; ".join(done.left))


@app.command("methods", epilog="Example: curvbench methods peers")
@friendly
def list_methods(recipe: Optional[str] = RecipeForListing):
    """List the methods, their hyperparameters and defaults, and where each comes from.

    RECIPE (optional): also the import-path methods that recipe names."""
    from curvbench.cli import listings as catalog

    _print_listing(*catalog.method_lines(recipe))


@app.command("tasks", epilog="Example: curvbench tasks my-recipe.yaml")
@friendly
def list_tasks(recipe: Optional[str] = RecipeForListing):
    """List the tasks a recipe can name, and where each comes from.

    RECIPE (optional): also the task loader that recipe names."""
    from curvbench.cli import listings as catalog

    _print_listing(*catalog.task_lines(recipe))


@app.command(epilog="Example: curvbench ui --port 5001")
@friendly
def ui(
    tracking_uri: Optional[str] = UriOpt,
    port: int = typer.Option(5000, "--port", help="Port on 127.0.0.1.", metavar="PORT"),
    verbose: bool = typer.Option(False, "--verbose", help="Show the server's access log and warnings here "
                                 "(else they go to a log file, named when the server fails).", metavar=" "),
):
    """Start the MLflow UI on 127.0.0.1 against the same store."""
    import os
    import signal
    import socket
    import subprocess

    from curvbench.tracking.client import resolve_uri
    from curvbench.tracking.stores import check_tracking_uri, mask

    uri = resolve_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI, on the same runs
        check_tracking_uri(uri)
        typer.echo(f"MLflow UI of the tracking server: {mask(uri).rstrip('/')}/#/experiments?workflowType=machine_learning")
        _print_views(uri, mask(uri))
        return
    if not 1 <= port <= 65535:
        _fail(f"--port {port}: expected a port from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            _fail(f"--port {port}: 127.0.0.1:{port} cannot be used ({e.strerror}); choose another with --port")
    check_tracking_uri(uri)
    env = None
    if "://" not in uri:  # a folder: MLflow 3 serves a file store only when told to, and never an absent one
        if not os.path.isdir(uri):
            _fail(f"--tracking-uri {mask(uri)}: no such store; expected sqlite:///PATH, postgresql://..., "
                  f"http(s)://HOST:PORT or an existing MLflow file-store folder")
        env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    # MLflow 3's UI remembers a GenAI or model-training view per browser; this link opens the model-training one
    typer.echo(f"MLflow UI for {mask(uri)} at http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning")
    if "://" in uri:
        _print_views(uri, f"http://127.0.0.1:{port}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    log, out = None, None
    if not verbose:  # hundreds of access-log lines and deprecation warnings: to a file, unless asked for
        import tempfile

        log = os.path.join(tempfile.gettempdir(), f"curvbench-ui-{port}.log")
        out = open(log, "w")  # noqa: SIM115 - held open for the server's life
        env = {**(env or os.environ), "PYTHONWARNINGS": "ignore"}
        typer.echo(f"the server's log: {log} (--verbose shows it here)")
    # the server and its workers in a process group of their own: Ctrl-C or SIGTERM stops all of them
    server = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=out, stderr=out)

    def stop(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
        raise typer.Exit(0 if signum == signal.SIGINT else EXIT_INTERRUPTED)

    import contextlib

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = server.wait()
    if code != 0:
        _fail(f"the MLflow UI stopped with exit status {code}" + (f"; its log: {log}" if log else ""), 1)


def _click_exceptions():
    try:  # Typer ships its own copy of click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - a Typer that uses click itself
        from click import exceptions
    return exceptions


def main() -> None:
    """The console script: usage errors are one line (`error: --epochs: ...`) and exit 2, like every other."""
    cx = _click_exceptions()
    try:
        code = app(standalone_mode=False)
    except cx.NoArgsIsHelpError as e:  # `curvbench train` with nothing: its help
        e.show()
        sys.exit(2)
    except cx.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "curvbench"
        typer.echo(f"error: {' '.join(e.format_message().split())} (see {where} --help)", err=True)
        sys.exit(2)
    except cx.ClickException as e:
        typer.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
