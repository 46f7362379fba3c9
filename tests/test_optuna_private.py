"""Optuna's private API that curvbench uses (curvbench/search/optuna_private.py), checked against the installed Optuna:
when a new Optuna renames or changes one of them, this fails here, not in a sweep."""

import optuna
from optuna.trial import TrialState

from curvbench.search import optuna_private


def test_the_private_api_curvbench_uses_is_there_and_does_what_it_needs(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", study_name="s")
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(waiting) == 2 and isinstance(optuna_private.trial_id(waiting[0]), int)
    optuna_private.forget_cached_trials(study)  # the attribute exists and can be cleared
    trial = optuna_private.claim_waiting(study, waiting[0])
    assert isinstance(trial, optuna.Trial) and trial.number == waiting[0].number
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING
    assert optuna_private.claim_waiting(study, study.get_trials(deepcopy=False)[0]) is None  # already taken
    with optuna_private.heartbeat(study, trial):  # the heartbeat thread's context manager
        pass
    optuna_private.fail_trial(study, study.get_trials(deepcopy=False)[1], "its process died")
    second = study.get_trials(deepcopy=False)[1]
    assert second.state == TrialState.FAIL and second.user_attrs["reason"] == "its process died"
    from optuna.storages import _heartbeat  # noqa: F401 - imported by optuna_private.heartbeat; must exist

    assert optuna_private.storage_of(study) is study._storage


def test_a_taken_trial_whose_heartbeat_never_started_goes_stale_instead_of_running_for_ever(tmp_path):
    """A worker killed between taking a point and starting its heartbeat thread: the trial has the heartbeat `take`
    recorded, so Optuna fails it once the grace period is over (a trial with no heartbeat at all is never stale)."""
    import time

    from curvbench.search import studies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path}/o.db"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = studies.take(study, [{"x": 1.0}, {"x": 2.0}], url)
    assert study.get_trials(deepcopy=False)[trial.number].state == TrialState.RUNNING
    time.sleep(2.5)  # the grace period passes with no heartbeat thread
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials(deepcopy=False)[trial.number].state == TrialState.FAIL
