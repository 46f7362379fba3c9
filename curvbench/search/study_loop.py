"""The one loop that `tune` and `to-target` share: open the study (refusing one made under other settings, failing
the trials of dead processes so their points run again), then, until the budget is spent or the queue is empty:
stop if asked, take a point, run it under the storage heartbeat, and on Ctrl-C fail the trial (its point runs
again on resume) and end the parent run as KILLED. What differs, the run itself, is a callback."""

from __future__ import annotations

from typing import Callable

from curvbench import stopping
from curvbench.errors import CurvbenchError
from curvbench.search import studies
from curvbench.tracking.stores import explain, mask
from curvbench.training.runner import Interrupted


def open_study(name: str, storage: str | None, direction: str, sampler, mark: str, what: str, pruner=None,
               settings: dict | None = None):
    """The study `name` in `storage`, created when missing; `mark` is the fingerprint of the settings its trials
    are made under (`what` says what another fingerprint means; `settings`, kept with it, let a refusal name the
    fields that differ). Trials of processes that died are failed, so that their points are queued again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=studies.open_storage(storage), direction=direction,
                                load_if_exists=True, sampler=sampler, pruner=pruner)
    studies.check_fingerprint(study, mark, storage, what, settings)
    optuna.storages.fail_stale_trials(study)  # their heartbeat stopped more than the grace period ago
    studies.fail_dead_trials(study)  # ... at once when their process was on this host
    return study


def run_study(study, storage: str | None, points: list[dict] | None, suggest: Callable, run: Callable,
              parent=None, more: Callable[[], bool] = lambda: True, what: str = "point") -> None:
    """Take trials until `more()` is false or no point is left: `suggest(trial)` gives the trial its point,
    `run(trial, point)` runs it and tells the study its result. `points`: a queue of fixed points (a grid, the
    (method, seed) jobs), each run once across every worker; None: the sampler proposes."""
    from optuna.trial import TrialState

    try:
        while more():
            if stopping.requested:  # a worker asked to stop between trials: nothing of its own is running
                raise Interrupted([], f"interrupted by {stopping.requested}")
            trial = studies.take(study, points, storage, more)
            if trial is None:
                break  # every point is finished or being run by another worker
            point = suggest(trial)
            if points is not None and studies.drop_duplicate(study, trial, what):
                continue
            with studies.heartbeat(study, trial):  # lets a later start see that this process died mid-trial
                try:
                    run(trial, point)
                except Interrupted:
                    study.tell(trial, state=TrialState.FAIL)  # its point runs again when the study resumes
                    raise
    except Interrupted as e:
        if parent is not None:
            parent.end("KILLED", e.reason)
        raise
    except Exception as e:  # noqa: BLE001 - only the storage's own failures are turned into one line here
        if not storage_failed(e):
            raise
        cause = e.__cause__ or e.__context__  # what Optuna's StorageInternalError wraps: the database's own error
        why = explain(cause if cause is not None and storage_failed(cause) else e) or " ".join(str(e).split())[:200]
        if parent is not None:
            parent.end("FAILED", f"the study storage went away: {why}")
        raise CurvbenchError(f"study storage {mask(storage or studies.DEFAULT_STORAGE)} went away during the study "
                             f"({why}); the parent run is ended as FAILED and finished trials are kept: run the same "
                             f"command again once the storage is back") from None


def storage_failed(e: BaseException) -> bool:
    """The study's database failed (a server gone, a connection cut), not the training: Optuna wraps a failed
    commit in StorageInternalError, whose own text ("e.g. exceeding max length") misleads."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(e, (SQLAlchemyError, optuna.exceptions.StorageInternalError))
