"""Several worker processes on one study: `curvbench tune RECIPE --workers N [--devices cuda:0,cuda:1]`, and the
same for `to-target`, whose (method, seed) runs are the queue.

Each worker is the same command with one device and its share of the CPU cores; they share the
study through its storage (Optuna's documented way to distribute a study: every worker opens the same RDB
storage), so every grid point runs once across all of them, whichever machine they are on. This process only
starts them, shows one combined progress line per method (read from the study), forwards Ctrl-C and SIGTERM to
every worker (each ends its running trial or run as it does alone) and exits with the combined outcome: 0 when
every worker did, 130 when interrupted, else the first failing worker's code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from curvbench.errors import EXIT_DIVERGED, CurvbenchError, Stopped

# the flags this process consumes: the workers get the rest of the command line as it was typed
OWN_FLAGS = {"--workers": 1, "--devices": 1}


@dataclass(frozen=True)
class Worker:
    argv: list[str]
    env: dict[str, str]
    device: str
    threads: int


def check(workers: int, devices: list[str] | None) -> None:
    if workers < 1:
        raise CurvbenchError(f"--workers {workers}: expected 1 or more")
    if devices is not None:
        if not devices or any(not d for d in devices):
            raise CurvbenchError("--devices: expected a comma-separated list such as cuda:0,cuda:1")
        if len(devices) != workers:
            raise CurvbenchError(f"--devices names {len(devices)} device(s) for --workers {workers}; give one per "
                                 f"worker")
        from curvbench.training.timing import resolve_device

        for d in devices:  # every device exists, before any worker starts
            if d != "cpu" and not re.fullmatch(r"cuda(:\d{1,4})?", d):
                raise CurvbenchError(f"--devices: {d!r} is not a device; expected cpu, cuda or cuda:N")
            resolve_device(d)


def strip_own_flags(argv: list[str]) -> list[str]:
    """The command line without --workers/--devices (and their values), in either --flag value or --flag=value."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in OWN_FLAGS:
            skip = 0 if "=" in arg else OWN_FLAGS[name]
            continue
        out.append(arg)
    return out


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Each worker's share of the cores: the threads it is started with (whatever --threads the command had)."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def plan(argv: list[str], workers: int, devices: list[str] | None, cores: int | None = None) -> list[Worker]:
    """One command per worker: the same arguments, its device, its share of the cores (CPU workers), quiet."""
    base = strip_own_flags(argv)
    out = []
    for i in range(workers):
        device = devices[i] if devices else None
        threads = worker_threads(workers, cores)
        args = [sys.executable, "-m", "curvbench", *base, "--quiet", "--threads", str(threads)]
        if device:
            args += ["--device", device]
        env = dict(os.environ, CURVBENCH_WORKER=str(i + 1))
        out.append(Worker(args, env, device or "as the recipe says", threads))
    return out


class Exits(list):
    """(worker number, pid, exit code) of every worker, as `run` saw them end; `interrupted` when this command was
    interrupted (Ctrl-C or SIGTERM, passed on to every worker)."""

    interrupted: bool = False

    def killed(self) -> list[str]:
        """The workers a signal ended (SIGKILL, the out-of-memory killer, a crash), each in words."""
        out = []
        for n, pid, code in self:
            if code < 0:
                try:
                    how = signal.Signals(-code).name
                except ValueError:
                    how = f"signal {-code}"
                out.append(f"worker {n} (pid {pid}) was killed by {how}")
        return out

    def failed(self) -> int:
        """The first exit code of a worker that ended with an error of its own (its one line is above)."""
        return next((code for _, _, code in self if code > 0), 0)


def run(workers: list[Worker], progress, poll_seconds: float = 2.0) -> Exits:
    """Start the workers, call `progress()` every poll until all have exited, and return their Exits.
    Ctrl-C or SIGTERM here is passed to every worker, which ends its running trial; the workers' own errors go to
    this terminal's stderr."""
    procs: list[subprocess.Popen] = []
    stopping = {"signal": None}

    def forward(signum, frame):
        stopping["signal"] = signum
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i, w in enumerate(workers):
            # its own process group: a Ctrl-C in the terminal reaches this process only, which forwards it once
            procs.append(subprocess.Popen(w.argv, env=w.env, stdout=subprocess.DEVNULL, start_new_session=True))
            if i == 0:
                time.sleep(0.5)  # the first worker creates the storage's tables; the others open them
        # every worker is polled each round (not any(), which stops at the first running one): a worker that died
        # is reaped at once, so the others see its pid gone and run its trial again
        while [p for p in procs if p.poll() is None]:
            progress()
            time.sleep(poll_seconds)
        progress()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for p in procs:
            if p.poll() is None:  # only if this process itself failed: do not leave workers behind
                p.terminate()
                p.wait()
    exits = Exits([(i + 1, p.pid, p.returncode) for i, p in enumerate(procs)])
    exits.interrupted = stopping["signal"] is not None
    return exits


def devices_of(workers: int, devices: str | None) -> list[str] | None:
    """--devices as a list, checked against --workers (before anything starts)."""
    devs = [d.strip() for d in devices.split(",")] if devices else None
    check(workers, devs)
    return devs


def run_pool(argv: list[str], workers: int, devs: list[str] | None, progress, reporter, unit: str) -> Exits:
    """Start the workers (this command's own arguments), show `progress` until they are done; Ctrl-C: Stopped
    (exit 130) once every worker has ended its running `unit`. Returns how each worker ended."""
    exits = run(plan(argv, workers, devs), progress)
    reporter.close()
    if exits.interrupted:
        raise Stopped(f"interrupted: every worker ended its running {unit}; finished {unit}s are kept; run the same "
                      f"command again to resume")
    return exits


def end_runs_of_killed(exits: Exits, tracker) -> None:
    """A worker killed by a signal could not end its MLflow run: ended here as FAILED, with the reason."""
    if exits.killed() and tracker is not None:
        from curvbench.tracking.client import end_orphaned_runs

        end_orphaned_runs(tracker.client)


def raise_worker_error(exits: Exits) -> None:
    """A worker that ended with an error of its own (its one line is above): its exit code is the command's."""
    code = exits.failed()
    if code:
        error = CurvbenchError(f"a worker exited with code {code}; its error is above")
        error.exit_code = code
        raise error


def _check_exits(exits: Exits, unit: str, left: int) -> None:
    """The command's end after its summary: a worker's own error is above (its exit code is the command's); a
    worker killed by a signal left its {unit} to the others (a warning when they finished everything, else an
    error, exit 1, saying that the same command finishes it)."""
    from curvbench.training.progress import console

    raise_worker_error(exits)
    killed = exits.killed()
    if killed and left:
        error = CurvbenchError(f"{'; '.join(killed)}; {left} {unit}(s) not finished: run the same command again to "
                               f"finish them")
        error.exit_code = EXIT_DIVERGED
        raise error
    if killed:
        console.print(f"warning: {'; '.join(killed)}; the other workers ran its {unit} again", highlight=False,
                      soft_wrap=True)


def tune_pool(recipe, opts, workers, devices, tracker, reporter) -> None:
    """`tune --workers N`: N copies of this command share the study; one combined progress line per method, then
    each method's result read back from the study. `opts`: the search's tune.SearchOptions."""
    from curvbench.search import tune as tuning
    from curvbench.search.studies import open_storage
    from curvbench.training.progress import console, tune_table

    devs = devices_of(workers, devices)
    open_storage(opts.storage)  # an unusable storage: one line, before any worker starts
    shown: dict = {}

    def standing():
        return tuning.study_progress(recipe, opts.sampler, opts.trials, opts.storage, opts.study)

    def progress():
        for entry, state in standing().items():
            if shown.get(entry) != state:
                shown[entry] = state
                reporter.search_status(f"tune {entry}", *state)

    exits = run_pool(sys.argv[1:], workers, devs, progress, reporter, "trial")
    end_runs_of_killed(exits, tracker)
    for res in tuning.study_results(recipe, opts.sampler, opts.storage, opts.study, opts.on, opts.seeds):
        console.print(tune_table(res))
        console.print(tuning.result_line(res, tracker.shown_uri))
    left = sum(running + waiting for _, running, waiting, _ in standing().values())
    _check_exits(exits, "trial", left)


def to_target_pool(recipe, workers, devices, storage, acc, on, baseline, tracker, reporter) -> None:
    """`to-target --workers N`: N copies of this command pop (method, seed) runs from one queue; the summary is
    read back from it."""
    from rich.markdown import Markdown

    from curvbench import record
    from curvbench.search import studies
    from curvbench.search.to_target import queue_progress, queue_summaries, summary_markdown, target_of
    from curvbench.training.progress import console

    devs = devices_of(workers, devices)
    target = target_of(recipe, acc)
    storage = storage or studies.DEFAULT_STORAGE
    studies.open_storage(storage)  # an unusable storage: one line, before any worker starts
    key = record.split_metric(on or recipe.default_split(), recipe.task.metric)
    shown = {}

    def progress():
        state = queue_progress(recipe, storage, target, key)
        if shown.get("state") != state:
            shown["state"] = state
            reporter.search_status("to-target", *state, None)

    argv = sys.argv[1:] + ([] if any(a.split("=")[0] == "--storage" for a in sys.argv) else ["--storage", storage])
    exits = run_pool(argv, workers, devs, progress, reporter, "run")
    end_runs_of_killed(exits, tracker)
    summaries, left, parent = queue_summaries(recipe, storage, target, key)
    console.print(Markdown(summary_markdown(summaries, target, key, baseline)))
    console.print(f"parent run {parent} in {tracker.shown_uri}" + (f"; {left} run(s) not finished" if left else ""))
    _check_exits(exits, "run", left)


def scale_batch_pool(workers, devices, storage, tracker, reporter) -> None:
    """`scale-batch --workers N`: N copies of this command share each batch size's search and to-target queue.
    The caller then runs the sweep once more in this process, which reads back what the workers did and runs only
    what a killed worker left."""
    from curvbench.search.studies import open_storage
    from curvbench.training.progress import console

    devs = devices_of(workers, devices)
    open_storage(storage)  # an unusable storage: one line, before any worker starts
    exits = run_pool(sys.argv[1:], workers, devs, lambda: None, reporter, "run")
    end_runs_of_killed(exits, tracker)
    raise_worker_error(exits)
    if exits.killed():
        console.print(f"warning: {'; '.join(exits.killed())}; what it left is run here", highlight=False,
                      soft_wrap=True)
