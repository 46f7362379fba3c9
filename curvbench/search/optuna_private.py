"""Every use of Optuna's private API, in one place: the study's storage, a trial's storage id, the heartbeat
thread `Study.optimize` runs, and the per-thread trial cache `ask()` clears. curvbench needs them to pop a queued
grid point atomically and to fail a dead worker's trial at once, which Optuna's public API does not offer.
tests/test_optuna_private.py checks each against the installed Optuna, so that an Optuna that changes one fails
loudly there; pyproject.toml bounds Optuna below the next minor version."""

from __future__ import annotations

import contextlib

from curvbench import record


def storage_of(study):
    return study._storage


def trial_id(trial) -> int:
    """The storage's id of a trial (FrozenTrial or Trial): not its number."""
    return trial._trial_id


def fail_trial(study, trial, reason: str) -> None:
    from optuna.trial import TrialState

    storage_of(study).set_trial_user_attr(trial_id(trial), record.TRIAL_REASON, reason)
    storage_of(study).set_trial_state_values(trial_id(trial), state=TrialState.FAIL)


def claim_waiting(study, frozen):
    """The WAITING trial `frozen` set RUNNING by this process, as a Trial; None when another got it first."""
    import optuna
    from optuna.trial import TrialState

    if storage_of(study).set_trial_state_values(trial_id(frozen), state=TrialState.RUNNING):
        return optuna.Trial(study, trial_id(frozen))
    return None


def first_heartbeat(study, trial) -> None:
    """Record the trial's heartbeat once, as soon as it is RUNNING: Optuna never counts a trial without one as stale,
    so a process killed before its heartbeat thread started would leave the trial RUNNING for ever."""
    storage = storage_of(study)
    if getattr(storage, "get_heartbeat_interval", lambda: None)():
        storage.record_heartbeat(trial_id(trial))


def forget_cached_trials(study) -> None:
    """As ask() does: the next read of the study's trials goes to the storage."""
    study._thread_local.cached_all_trials = None


def heartbeat(study, trial):
    """Optuna's heartbeat thread, as Study.optimize runs it; a no-op where the storage has none."""
    try:
        from optuna.storages._heartbeat import get_heartbeat_thread
    except ImportError:  # pragma: no cover - an Optuna without it fails tests/test_optuna_private.py
        return contextlib.nullcontext()
    return get_heartbeat_thread(trial_id(trial), storage_of(study))
