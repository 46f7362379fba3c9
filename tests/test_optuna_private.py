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
