"""What the user sees while runs go: a rich progress display, or plain lines with --quiet, and a summary."""

from __future__ import annotations
from curvbench import record

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, highlight=False)


def _fmt_metrics(metrics: dict[str, float]) -> str:
    keys = [k for k in metrics if k.endswith(("_accuracy", "_f1")) or k == record.TRAIN_LOSS]
    secs = metrics.get(record.EPOCH_SECONDS)
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys) + (f"  {secs:.2f}s" if secs is not None else "  (partial epoch)")


class QuietReporter:
    """One plain line per epoch and per run: for logs and CI."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.name = ""

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run_started(self, name: str, total_steps: int, steps_per_epoch: int, epochs: int) -> None:
        self.name = name
        self._say(f"[{name}] start: {epochs} epochs x {steps_per_epoch} steps")

    def progress(self, step: int, epoch: int, loss: float) -> None:
        pass

    def epoch_end(self, epoch_record) -> None:
        self._say(f"[{self.name}] epoch {epoch_record.epoch}: {_fmt_metrics(epoch_record.metrics)}")

    def run_ended(self, outcome) -> None:
        self._say(f"[{self.name}] {describe(outcome)}")

    def close(self) -> None:
        pass


class RichReporter(QuietReporter):
    """A live bar for the run's steps with the running loss and the last test accuracy."""

    def __init__(self):
        super().__init__()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress_ui = Progress(
            TextColumn("[bold]{task.fields[name]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}  loss {task.fields[loss]}  acc {task.fields[acc]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.progress_ui.start()
        self.task_id = None
        self.epochs = 0

    def run_started(self, name, total_steps, steps_per_epoch, epochs):
        self.name, self.epochs = name, epochs
        self.task_id = self.progress_ui.add_task(
            "", total=total_steps, name=name, epoch=f"0/{epochs}", loss="-", acc="-"
        )

    def progress(self, step, epoch, loss):
        self.progress_ui.update(self.task_id, completed=step, epoch=f"{epoch}/{self.epochs}", loss=f"{loss:.4f}")

    def epoch_end(self, epoch_record):
        acc = next((v for k, v in epoch_record.metrics.items() if k.startswith("test_") and k.endswith("accuracy")), None)
        self.progress_ui.update(
            self.task_id,
            completed=epoch_record.step,
            epoch=f"{epoch_record.epoch}/{self.epochs}",
            loss=f"{epoch_record.metrics['train_loss']:.4f}",
            acc="-" if acc is None else f"{acc:.4f}",
        )

    def run_ended(self, outcome):
        if outcome.status != "FINISHED":
            self.progress_ui.console.print(f"[yellow]{self.name}:[/] {describe(outcome)}")

    def close(self):
        self.progress_ui.stop()


def describe(outcome) -> str:
    """"diverged: loss nan in epoch 1", never "diverged (diverged: ...)"."""
    status, reason = outcome.status.lower(), outcome.reason or ""
    if not reason or reason.startswith(status):
        return reason or status
    return f"{status}: {reason}"


def summary_table(outcomes: list[Any], metric: str = "accuracy") -> Table:
    table = Table(title="curvbench summary")
    for col in ("run", "status", "epochs", f"final test {metric}", f"best test {metric}", "s/epoch", "ms/step",
                "train s"):
        table.add_column(col, justify="left" if col in ("run", "status") else "right", no_wrap=col == "run")
    for o in outcomes:
        key = record.split_metric("test", metric)
        curve = [r.metrics[key] for r in o.epochs if key in r.metrics]
        status = {"FINISHED": "[green]finished", "DIVERGED": "[red]diverged", "KILLED": "[yellow]killed"}.get(
            o.status, f"[red]{o.status.lower()}"
        )
        n = len(o.epochs)
        whole = [r.metrics[record.EPOCH_SECONDS] for r in o.epochs if record.EPOCH_SECONDS in r.metrics]  # no partial epochs
        table.add_row(
            o.name,
            status,
            str(n),
            f"{curve[-1]:.4f}" if curve else "-",
            f"{max(curve):.4f}" if curve else "-",
            f"{sum(whole) / len(whole):.2f}" if whole else "-",
            f"{1000 * o.train_seconds / o.steps:.2f}" if o.steps else "-",
            f"{o.train_seconds:.1f}",
        )
    return table


def tune_table(result) -> Table:
    """The trials of one study, best first (pruned and diverged ones last)."""
    title = f"{result.entry}: study {result.study}"
    if getattr(result, "held", None):
        title += f" (PARTIAL: {len(result.held)} trial(s) still run by other workers)"
    table = Table(title=title)
    trials = sorted(result.trials, key=lambda t: (t.value is None, -(t.value or 0.0)))
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    for col in ["trial", *names, "score", "state"]:
        table.add_column(col, justify="right" if col not in ("state",) else "left")
    for t in trials:
        state = t.state.name.lower() + (f" ({t.user_attrs['reason']})" if "reason" in t.user_attrs else "")
        table.add_row(str(t.number), *[f"{t.params.get(n, '-')}" for n in names],
                      "-" if t.value is None else f"{t.value:.4f}", state)
    return table
