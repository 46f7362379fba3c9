"""The `curvbench` command line. Thin: parse arguments, call the library, turn errors into one line.

torch and mlflow are imported inside the commands only, so `curvbench --help` is instant."""

from __future__ import annotations

import functools
import sys
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train networks with different optimizers, compare them, and track every run in MLflow.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly(func):
    """Any CurvbenchError becomes `error: <one line>` and its exit code; no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from curvbench.errors import CurvbenchError

        try:
            return func(*args, **kwargs)
        except CurvbenchError as e:
            _fail(str(e), e.exit_code)

    return wrapper


# ---- options shared by the commands that train
def _overrides(
    epochs, batch_size, seeds, device, threads, data_dir, no_download, sets, methods
):
    from curvbench.recipe import Overrides, parse_assignment

    values: dict = {}
    for text in sets or []:
        key, value = parse_assignment(text)
        values[key] = value
    for flag, path in (
        (epochs, "training.epochs"),
        (batch_size, "training.batch_size"),
        (device, "training.device"),
        (threads, "training.threads"),
        (data_dir, "task.data_dir"),
    ):
        if flag is not None:
            values[path] = flag
    if seeds:
        values["training.seeds"] = list(seeds)
    if no_download:
        values["task.download"] = False
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
    return Overrides(values, names)


EpochsOpt = typer.Option(None, "--epochs", help="Override training.epochs.")
BatchOpt = typer.Option(None, "--batch-size", help="Override training.batch_size.")
MethodsOpt = typer.Option(None, "--methods", help="Comma-separated method entries to run (e.g. sgd,lion).")
SeedOpt = typer.Option(None, "--seed", help="Seed(s) to run; repeat for several. Overrides training.seeds.")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu or cuda.")
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads for torch.")
DataDirOpt = typer.Option(None, "--data-dir", help="Folder holding the datasets (else $CURVBENCH_DATA).")
NoDownloadOpt = typer.Option(False, "--no-download", help="Never try to download missing data.")
SetOpt = typer.Option(None, "--set", help="Override any recipe field: --set methods.sgd.lr=0.05")
UriOpt = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (else $MLFLOW_TRACKING_URI, else mlruns/).")
ExperimentOpt = typer.Option(None, "--experiment", help="MLflow experiment name (default: the task).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Plain log lines instead of live progress.")


def _reporter(quiet: bool):
    from curvbench.console import QuietReporter, RichReporter

    return QuietReporter() if quiet or not sys.stdout.isatty() else RichReporter()


@app.command()
@friendly
def train(
    recipes: List[str] = typer.Argument(..., help="Recipe names (recipes/NAME.yaml) or paths."),
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
    """Train every method of each recipe, one MLflow run per method and seed."""
    from curvbench import recipe as recipes_mod

    ov = _overrides(epochs, batch_size, seed, device, threads, data_dir, no_download, set_, methods)
    if experiment:
        ov.values["experiment"] = experiment
    loaded = [recipes_mod.load(r, ov) for r in recipes]  # check every recipe before the first run starts

    from curvbench.console import console, summary_table
    from curvbench.runner import Interrupted, run_recipe
    from curvbench.tracking import Tracker

    tracker = Tracker(tracking_uri)
    reporter = _reporter(quiet)
    outcomes = []
    try:
        for r in loaded:
            outcomes += run_recipe(r, tracker, reporter)
    except Interrupted as e:
        reporter.close()
        outcomes += e.outcomes
        console.print(summary_table(outcomes))
        _fail("interrupted: the current run was ended as KILLED; everything logged so far is kept", EXIT_INTERRUPTED)
    reporter.close()
    console.print(summary_table(outcomes))
    console.print(f"runs stored in {tracker.uri}; open them with `curvbench ui`")
    bad = [o for o in outcomes if o.status != "FINISHED"]
    if bad:
        _fail("; ".join(f"{o.name} {o.status.lower()}: {o.reason}" for o in bad), EXIT_DIVERGED)


@app.command("methods")
@friendly
def list_methods():
    """List the methods, their hyperparameters and defaults."""
    from curvbench.methods import registry

    for spec in registry().values():
        typer.echo(f"{spec.name}: {spec.description} [L2 {spec.regularisation}]")
        for h in spec.hparams:
            typer.echo(f"    {h.name} = {h.default!r}: {h.help}")


@app.command("tasks")
def list_tasks():
    """List the tasks a recipe can name."""
    from curvbench.tasks import TASKS

    for t in TASKS.values():
        typer.echo(f"{t.name:14s} models: {', '.join(t.models):10s} metric: {t.metrics[0]:9s} {t.description}")


@app.command()
@friendly
def ui(
    tracking_uri: Optional[str] = UriOpt,
    port: int = typer.Option(5000, "--port", help="Port on 127.0.0.1."),
):
    """Start the MLflow UI on 127.0.0.1 against the same store."""
    import subprocess

    from curvbench.tracking import resolve_uri

    uri = resolve_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        import pathlib

        pathlib.Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    try:
        raise typer.Exit(subprocess.call(cmd))
    except KeyboardInterrupt:
        raise typer.Exit(0)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
