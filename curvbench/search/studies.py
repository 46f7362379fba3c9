"""Optuna studies shared by workers: the storage, the queue of points every worker pops from, who holds which
trial, and one MLflow parent run per study. `tune` queues grid points; `to-target` queues (method, seed) jobs.

Every worker opens the same RDB storage (SQLite on one machine, PostgreSQL across machines). A trial that was
interrupted (FAIL) or whose process died (caught by the storage heartbeat, or at once on the same host) has its
point queued again by the next worker that starts."""

from __future__ import annotations

import contextlib
import math
import os
import socket

from curvbench import record
from curvbench.errors import CurvbenchError
from curvbench.search import optuna_private
from curvbench.tracking.client import SQLITE_LOCK_SECONDS, flatten, owner_tags, process_alive, sqlite_lock
from curvbench.tracking.stores import absolute_sqlite, mask
from curvbench.tracking.tracked_run import TrackedRun

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"


HEARTBEAT_SECONDS = 30  # how often a running trial tells the storage that its process lives
HEARTBEAT_GRACE = 120  # seconds without a heartbeat before another worker runs a trial's point again

_OPENED: dict = {}  # url -> RDBStorage: one connection pool per storage and process, however often it is opened


def open_storage(url: str | None):
    url = absolute_sqlite(url or DEFAULT_STORAGE)  # one storage per file, wherever the process is
    if url not in _OPENED:
        _OPENED[url] = _open_storage(url)
    return _OPENED[url]


def _open_storage(url: str):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")  # we run it ourselves

    from curvbench.tracking.stores import check_study_storage, explain

    check_study_storage(url)  # scheme, file, folder, driver, server: one line naming the URL, before any training
    # a heartbeat lets a later start see the trials of a process that died, and run their points again
    kwargs = {"connect_args": {"timeout": SQLITE_LOCK_SECONDS}} if url.startswith("sqlite") else {}
    try:
        with sqlite_lock(url):  # a new database's tables are created by one process at a time
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=HEARTBEAT_GRACE,
                                              engine_kwargs=kwargs)
    except Exception as e:  # noqa: BLE001 - a broken or foreign database: one line naming it
        raise CurvbenchError(f"study storage {mask(url)}: {explain(e) or f'{e.__class__.__name__}: {e}'}") from None


def fail_dead_trials(study) -> list[int]:
    """Trials RUNNING in a process of this host that is gone: FAIL now (their points are queued again), rather
    than after the heartbeat grace period."""
    from optuna.trial import TrialState

    host, dead = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get(record.PID)
        if t.user_attrs.get(record.HOST) == host and pid and int(pid) != os.getpid() and not process_alive(int(pid)):
            optuna_private.fail_trial(study, t, f"its process (pid {pid} on {host}) died")
            dead.append(t.number)
    return dead


def held_elsewhere(study) -> list[str]:
    """Trials still RUNNING in other processes when this one is done: who holds them, and what happens if
    that worker is gone."""
    from optuna.trial import TrialState

    host, out = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where, pid = t.user_attrs.get(record.HOST, "?"), t.user_attrs.get(record.PID, "?")
        if where == host:
            state = "running" if pid != "?" and process_alive(int(pid)) else "its process is gone: rerun by the next tune"
        else:
            state = (f"if that worker is gone, the next tune started {HEARTBEAT_GRACE} s after its last heartbeat "
                     f"runs the point again")
        point = ", ".join(f"{k}={v}" for k, v in point_of(t).items())
        out.append(f"trial {t.number} ({point}) held by pid {pid} on {where}: {state}")
    return out


@contextlib.contextmanager
def study_lock(url: str | None):
    """One process at a time, across every worker of the storage `url`: a file lock beside a SQLite database, a
    session advisory lock on PostgreSQL (workers on several machines)."""
    url = url or DEFAULT_STORAGE
    if url.startswith("postgresql"):
        from sqlalchemy import text

        with open_storage(url).engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STUDY_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STUDY_LOCK_KEY})
        return
    with sqlite_lock(url):
        yield


STUDY_LOCK_KEY = 0x63757276  # "curv": the advisory lock curvbench takes on a PostgreSQL study storage


def shared_parent(tracker, study, storage, experiment: str, name: str, params: dict, tags: dict):
    """One MLflow parent run per study: the first worker of a study creates it, every resumed or parallel
    worker of that study reuses it (reopened as RUNNING), so the UI shows one search with all its runs."""
    with study_lock(storage):  # workers starting together make one parent, not two
        known = study.user_attrs.get(record.STUDY_PARENT)
        if known and study.user_attrs.get(record.STUDY_URI) == tracker.shown_uri:  # stored masked: no password
            try:
                tracker.client.update_run(known, status="RUNNING")
            except Exception:  # noqa: BLE001 - deleted, or another store: start a new parent
                known = None
            else:
                run = TrackedRun(tracker.client, known, remote=tracker.remote, name=name, uri=mask(tracker.uri))
                run.set_tags({**owner_tags(), "resumed": "true"})
                return run
        run = tracker.start(experiment, name, params, tags)
        study.set_user_attr(record.STUDY_PARENT, run.run_id)
        study.set_user_attr(record.STUDY_URI, tracker.shown_uri)
        return run


def same_point(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and isinstance(b[k], float) and math.isclose(a[k], b[k])) or a[k] == b[k] for k in a
    )


def heartbeat(study, trial):
    """Optuna's heartbeat thread, as Study.optimize runs it; a no-op where the storage has none."""
    return optuna_private.heartbeat(study, trial)


def point_of(trial) -> dict:
    """A trial's point: the whole point it was queued with, else its suggested params. Not params first: a trial
    that another worker is suggesting has only some of them, and its point would look free to queue again."""
    return trial.system_attrs.get("fixed_params") or trial.params


def holds_point(trial) -> bool:
    """The trial has its point: finished with it, running it or waiting to."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def enqueue_missing(study, points: list[dict]) -> None:
    """Put each grid point that no trial has finished, is running or is waiting for into the queue."""
    taken = [point_of(t) for t in study.get_trials(deepcopy=False) if holds_point(t)]
    for p in points:
        if not any(same_point(p, q) for q in taken):
            study.enqueue_trial(p)


def is_duplicate(study, trial) -> bool:
    """Another trial already holds this trial's point: the trial with the lower number keeps it. A safety net:
    with queueing under the study's lock it takes a worker that queued without it (an older curvbench)."""
    return any(t.number < trial.number and holds_point(t) and same_point(point_of(t), trial.params)
               for t in study.get_trials(deepcopy=False))


def check_fingerprint(study, mark: str, storage: str | None, what: str, settings: dict | None = None) -> None:
    """Refuse to mix into a study trials made under other settings (`mark`, their fingerprint); `what` says which.
    `settings`, the settings themselves, are kept beside the mark so that a refusal names the fields that differ
    (a study made before they were kept is refused without them)."""
    seen = study.user_attrs.get(record.STUDY_FINGERPRINT)
    if seen is None:
        study.set_user_attr(record.STUDY_FINGERPRINT, mark)
        if settings is not None:
            study.set_user_attr(record.STUDY_SETTINGS, settings)
    elif seen != mark:
        differ = differences(study.user_attrs.get(record.STUDY_SETTINGS), settings)
        if differ:  # before the remedy, which follows the first "; " of `what`
            head, _, remedy = what.partition("; ")
            what = f"{head}: it differs in {differ}" + (f"; {remedy}" if remedy else "")
        raise CurvbenchError(f"study {study.study_name!r} in {storage or DEFAULT_STORAGE} {what}")


def differences(before: dict | None, now: dict | None, most: int = 3) -> str:
    """The fields (dotted paths) whose values differ between two settings dictionaries, with both values: "" when
    either is unknown."""
    if not before or not now:
        return ""
    a, b = flatten(before), flatten(now)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "(unset)") != b.get(k, "(unset)"))
    shown = [f"{k} ({a.get(k, '(unset)')} then, {b.get(k, '(unset)')} now)" for k in keys[:most]]
    return ", ".join(shown) + (f" and {len(keys) - most} more" if len(keys) > most else "")


def take(study, points: list[dict] | None, storage: str | None, more=lambda: True):
    """The next trial for this worker, tagged with who runs it (a dead worker's trial is then failed at once); with
    `points`, popped from the queue of those not finished, running or waiting; None when none is left, or when
    `more()` (asked under the lock, so that it counts the trials other workers have just started) says the budget
    is taken.

    Queueing the missing points and popping one happen under the study's lock: two workers that both saw a point
    missing would otherwise both queue it, and one of the two trials would end as a failed duplicate. The pop is
    Optuna's own (a WAITING trial set RUNNING), without its fallback of creating a new trial when none waits. A
    sampler's trial is asked for under the same lock: two workers that both saw one trial left would otherwise
    both start one, and the search would exceed its budget."""
    with study_lock(storage):
        fail_dead_trials(study)  # a worker of this host died mid-trial: its point, or its share of the budget, is free
        if not more():
            return None
        trial = study.ask() if points is None else _pop(study, points)
        if trial is None:
            return None  # every point is finished or being run by another worker
        optuna_private.first_heartbeat(study, trial)  # dead before its heartbeat thread starts: stale, not stuck
        for attr, value in owner_tags().items():
            trial.set_user_attr(attr, value)
    return trial


def _pop(study, points: list[dict]):
    import optuna
    from optuna.trial import TrialState

    enqueue_missing(study, points)
    optuna_private.forget_cached_trials(study)  # the sampler reads the trials afresh

    def place(trial) -> int:  # the queue's own order: a point run again (its run killed) before later ones
        return next((i for i, p in enumerate(points) if same_point(point_of(trial), p)), len(points))

    for waiting in sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=place):
        try:
            trial = optuna_private.claim_waiting(study, waiting)
            if trial is not None:
                return trial
        except optuna.exceptions.UpdateFinishedTrialError:  # finished meanwhile by a worker of an older version
            continue
    return None


def drop_duplicate(study, trial, what: str) -> bool:
    """Fail a trial whose point another trial already holds; True when it was one."""
    from optuna.trial import TrialState

    if not is_duplicate(study, trial):
        return False
    trial.set_user_attr(record.TRIAL_REASON, f"duplicate {what}")
    study.tell(trial, state=TrialState.FAIL)
    return True
