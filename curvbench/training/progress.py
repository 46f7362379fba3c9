"""What the user sees while runs go, all on stderr: live bars on a terminal (steps, throughput, time left, run k
of N, a search's trials), one line per epoch elsewhere, nothing with --quiet; then a summary on stdout."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from curvbench import record

console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, highlight=False)


def _fmt_metrics(metrics: dict[str, float]) -> str:
    keys = [k for k in metrics if k.endswith(("_accuracy", "_f1")) or k == record.TRAIN_LOSS]
    secs = metrics.get(record.EPOCH_SECONDS)
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys) + (f"  {secs:.2f}s" if secs is not None else "  (partial epoch)")


class QuietReporter:
    """--quiet: says nothing while runs go; the command prints its summary at the end. Also the base of the others:
    `expect_runs(n)` announces how many runs come, `search_status` how a search stands."""

    def __init__(self, out=None):
        self.out = out or sys.stderr
        self.name = ""
        self.runs_total: int | None = None
        self.runs_started = 0

    def _say(self, text: str) -> None:
        pass

    def expect_runs(self, n: int) -> None:
        self.runs_total, self.runs_started = n, 0

    def _counted(self, name: str) -> str:
        self.runs_started += 1
        return f"{name} (run {self.runs_started} of {self.runs_total})" if self.runs_total else name

    def search_status(self, label: str, done: int, running: int, left: int, best: float | None) -> None:
        """label: what is queued ("tune sgd", "to-target")."""
        pass

    def run_started(self, name: str, total_steps: int, steps_per_epoch: int, epochs: int) -> None:
        self.name = name
        self._say(f"[{self._counted(name)}] start: {epochs} epochs x {steps_per_epoch} steps")

    def run_resumed(self, step: int) -> None:
        """The run went on from a checkpoint at `step` (its earlier epochs were replayed)."""
        self._say(f"[{self.name}] resumed from its checkpoint at step {step}")

    def progress(self, step: int, epoch: int, loss: float) -> None:
        pass

    def epoch_end(self, epoch_record) -> None:
        self._say(f"[{self.name}] epoch {epoch_record.epoch}: {_fmt_metrics(epoch_record.metrics)}")

    def run_ended(self, outcome) -> None:
        self._say(f"[{self.name}] {describe(outcome)}")

    def close(self) -> None:
        pass


class LineReporter(QuietReporter):
    """One plain line per run start, epoch, run end and search step, on stderr: for logs and CI; inside an epoch,
    a line every `every_seconds` (step, loss, time left), so that a log whose epochs take half an hour (ResNet-18
    on a CPU) shows the run alive and when it will end. `clock` is injectable."""

    def __init__(self, out=None, every_seconds: float = 300.0, clock=None):
        super().__init__(out)
        self.every_seconds = every_seconds
        self.time_left = TimeLeft(clock)
        self.clock = self.time_left.clock
        self.last_line = self.clock()

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)
        self.last_line = self.clock()

    def run_started(self, name, total_steps, steps_per_epoch, epochs):
        self.time_left.run_started(total_steps, steps_per_epoch)
        super().run_started(name, total_steps, steps_per_epoch, epochs)

    def run_resumed(self, step):
        self.time_left.resumed(step)
        super().run_resumed(step)

    def progress(self, step, epoch, loss):
        t = self.time_left
        t.at(step)
        if self.clock() - self.last_line >= self.every_seconds:
            rate = t.seconds_per_step()
            pace = "" if rate is None else f", {rate:.2f} s/step"
            self._say(f"[{self.name}] step {step}/{t.total} (epoch {epoch}), loss {loss:.4f}{pace}, "
                      f"left {clock_text(t.run_left())} (epoch {clock_text(t.epoch_left())})")

    def search_status(self, label, done, running, left, best):
        best_text = "" if best is None else f", best {best:.4f}"
        self._say(f"[{label}] done {done}, running {running}, left {left}{best_text}")


class TimeLeft:
    """Time left from the run's own pace: wall seconds per step since the run started (evaluations included, as
    the wait includes them), so an estimate exists from the first progress report on, however slow a step is,
    where a throughput window of the last seconds has nothing to go on for hours. `clock` is injectable."""

    def __init__(self, clock=None):
        import time

        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.total, self.per_epoch, self.step, self.base = 0, 0, 0, 0
        self.runs_done_seconds: list[float] = []  # wall seconds of the runs finished so far

    def run_started(self, total_steps: int, steps_per_epoch: int) -> None:
        self.start, self.total, self.per_epoch, self.step = self.clock(), total_steps, steps_per_epoch, 0
        self.base = 0  # steps done before this process took the run up (a checkpoint's)

    def resumed(self, step: int) -> None:
        """The run goes on from a checkpoint at `step`: the pace counts the steps taken from here on only."""
        self.start, self.base, self.step = self.clock(), step, step

    def at(self, step: int) -> None:
        self.step = step

    def run_ended(self) -> None:
        """Counts the run's wall seconds (a resumed run's scaled to all its steps at the pace seen here)."""
        seconds, done = self.clock() - self.start, self.step - self.base
        self.runs_done_seconds.append(seconds * self.step / done if self.base and done > 0 else seconds)

    def seconds_per_step(self) -> float | None:
        done = self.step - self.base
        return (self.clock() - self.start) / done if done > 0 else None

    def run_left(self) -> float | None:
        rate = self.seconds_per_step()
        return None if rate is None else rate * max(0, self.total - self.step)

    def epoch_left(self) -> float | None:
        rate = self.seconds_per_step()
        if rate is None or not self.per_epoch:
            return None
        return rate * ((-self.step) % self.per_epoch)

    def overall_left(self, runs_not_started: int) -> float | None:
        """The running run's time left plus, for each run not started, the mean length of the finished runs (or,
        before any finished, this run's own estimated length)."""
        left = self.run_left()
        if left is None:
            return None
        rate = self.seconds_per_step()
        each = (sum(self.runs_done_seconds) / len(self.runs_done_seconds) if self.runs_done_seconds
                else rate * self.total)
        return left + runs_not_started * each


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def short_label(name: str, width: int = 22) -> str:
    """A run's name cut to `width` characters, so that on an 80-column terminal the numbers stay on the line."""
    return name if len(name) <= width else name[: width - 1] + "…"


class RichReporter(QuietReporter):
    """Live bars on stderr: one per run (steps, epoch, loss, accuracy, throughput, time left), an overall bar of
    runs k of N or of a search's trials (done, running, left, best so far)."""

    def __init__(self):
        super().__init__()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Column

        # on a narrow terminal the label and the info give way; the bar, the step count and the times keep their
        # width
        self.progress_ui = Progress(
            TextColumn("[bold]{task.fields[name]}", table_column=Column(ratio=2, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=8, table_column=Column(min_width=8)),
            MofNCompleteColumn(table_column=Column(min_width=9, no_wrap=True)),
            TextColumn("{task.fields[info]}", table_column=Column(ratio=3, no_wrap=True, overflow="ellipsis")),
            TimeElapsedColumn(table_column=Column(min_width=7, no_wrap=True)),
            TextColumn("left {task.fields[left]}", table_column=Column(min_width=24, no_wrap=True)),
            expand=True,
            console=err_console,
            transient=False,
        )
        self.progress_ui.start()
        self.task_id = None
        self.overall = None
        self.epochs = 0
        self.time_left = TimeLeft()

    def _overall(self, total: int, name: str, done: int = 0, info: str = ""):
        if self.overall is None:
            self.overall = self.progress_ui.add_task("", total=total, name=name, info=info, left="-:--:--")
        self.progress_ui.update(self.overall, total=total, completed=done, name=name, info=info)

    def expect_runs(self, n):
        super().expect_runs(n)
        self._overall(n, "runs", 0)

    def search_status(self, label, done, running, left, best):
        best_text = "" if best is None else f"  best {best:.4f}"
        self._overall(done + running + left, f"{label}:", done, f"running {running}  left {left}{best_text}")

    def run_started(self, name, total_steps, steps_per_epoch, epochs):
        self.name, self.epochs = self._counted(name), epochs
        if self.task_id is not None:
            self.progress_ui.remove_task(self.task_id)
        self.time_left.run_started(total_steps, steps_per_epoch)
        self.task_id = self.progress_ui.add_task("", total=total_steps, name=short_label(self.name),
                                                 info=f"ep 0/{epochs}", left="-:--:--")

    def run_resumed(self, step):
        self.time_left.resumed(step)
        self.progress_ui.update(self.task_id, completed=step)

    def _times(self, step: int) -> None:
        """The run's time left (and its epoch's), and the overall bar's, from the run's own pace."""
        t = self.time_left
        t.at(step)
        self.progress_ui.update(self.task_id, left=f"{clock_text(t.run_left())} (ep {clock_text(t.epoch_left())})")
        if self.overall is not None and self.runs_total:
            not_started = max(0, self.runs_total - self.runs_started)
            self.progress_ui.update(self.overall, left=clock_text(t.overall_left(not_started)))

    def progress(self, step, epoch, loss):
        self.progress_ui.update(self.task_id, completed=step, info=f"ep {epoch}/{self.epochs} loss {loss:.3f}")
        self._times(step)

    def epoch_end(self, epoch_record):
        m = epoch_record.metrics
        acc = next((v for k, v in m.items() if k.startswith("test_") and k.endswith("accuracy")), None)
        self.progress_ui.update(self.task_id, completed=epoch_record.step,
                                info=f"ep {epoch_record.epoch}/{self.epochs} loss {m[record.TRAIN_LOSS]:.3f} "
                                     f"acc {'-' if acc is None else f'{acc:.3f}'}")
        self._times(epoch_record.step)

    def run_ended(self, outcome):
        self.time_left.run_ended()
        if self.overall is not None and self.runs_total:
            self.progress_ui.update(self.overall, completed=self.runs_started)
        if outcome.status != "FINISHED":
            from rich.markup import escape

            self.progress_ui.console.print(f"[yellow]{escape(self.name)}:[/] {escape(describe(outcome))}")

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
        state = t.state.name.lower() + (f" ({t.user_attrs[record.TRIAL_REASON]})" if record.TRIAL_REASON in t.user_attrs
                                         else "")
        table.add_row(str(t.number), *[f"{t.params.get(n, '-')}" for n in names],
                      "-" if t.value is None else f"{t.value:.4f}", state)
    return table
