"""The vocabulary of what a run records: metric names, tag keys and run kinds, written by the engine, the runner,
tune and to-target and read by the report. One name, one place: renaming one here renames it everywhere."""

from __future__ import annotations

# ---- metrics, once per epoch (step = epoch)
TRAIN_LOSS = "train_loss"  # mean over the epoch's batches
LR = "lr"  # the learning rate of the epoch's last step
STEPS = "steps"  # cumulative steps
KFAC_DAMPING = "kfac_damping"  # adaptive K-FAC: the damping lambda at the epoch's end
KFAC_ALPHA, KFAC_MU, KFAC_RHO = "kfac_alpha", "kfac_mu", "kfac_rho"  # its step, momentum, reduction ratio (means)
KFAC_GAMMA = "kfac_gamma"  # adaptive K-FAC: the factors' Tikhonov damping gamma at the epoch's end
TRAIN_SECONDS = "train_seconds"  # cumulative training seconds (evaluation excluded)
EPOCH_SECONDS = "epoch_seconds"  # training seconds of an epoch that ran all its steps


def split_metric(split: str, metric: str) -> str:
    """test_accuracy, val_loss, val_f1, ..."""
    return f"{split}_{metric}"


# ---- metrics set once, at the end of a run (step 0): the columns worth showing in the MLflow UI
def best_metric(key: str) -> str:
    return f"best_{key}"  # best_test_accuracy


def final_metric(key: str) -> str:
    return f"final_{key}"  # final_test_accuracy


TIME_TO_TARGET = "time_to_target"  # training seconds when the target was first reached
STEPS_TO_TARGET = "steps_to_target"
EPOCHS_TO_TARGET = "epochs_to_target"
SECONDS_PER_STEP = "seconds_per_step"  # training seconds / steps over the whole run
EVAL_TRAIN_SECONDS = "eval_train_seconds"  # to-target's evaluations inside epochs (step = global step)
BEST_SCORE = "best_score"  # a tune parent: the best trial's score
TRIALS_COMPLETE, TRIALS_PRUNED = "trials_complete", "trials_pruned"


def eval_metric(key: str) -> str:
    return f"eval_{key}"


# ---- tags of every run
TASK, METHOD, ENTRY, SEED = "task", "method", "entry", "seed"
RECIPE, RECIPE_HASH = "recipe", "recipe_hash"
KIND = "kind"  # what produced the run: one of the KINDS below (absent: a plain `train` run)
OUTCOME = "outcome"  # finished, diverged, stopped early, or PROCESS_ENDED
PROCESS_ENDED = "process ended"  # the outcome of a run whose process died without closing it (killed, crashed)
PROCESS_ENDED_REASON = "ended without closing the run: killed or crashed"  # its status reason ends with this
RESUMED_AT_EPOCH = "resumed_at_epoch"  # the run went on from a checkpoint of an earlier, killed run: epochs done
RESUMED_AT_STEP = "resumed_at_step"  # ... and steps done (inside an epoch when not a multiple of an epoch's steps)
STATUS_REASON = "status_reason"  # why a run ended as FAILED or KILLED
# how a task computed beyond its recipe (tags; CIFAR-10's ResNet-18): an `auto` setting resolves per machine, so
# runs of one recipe may differ in them; the report never averages such runs, nor prices one with another's table
PRECISION, MEMORY_FORMAT = "precision", "memory_format"
EXECUTION = (PRECISION, MEMORY_FORMAT)
TIMING = "timing"  # quiet, or busy: other processes used more of the machine than the run's threads left free
PARENT = "mlflow.parentRunId"
RUN_KEY = "curvbench.run_key"  # made by the client: a create retried after a lost answer finds its run
HOST, PID = "curvbench.host", "curvbench.pid"  # the process that runs a run or a trial (tags; trial user attrs)
# what produced the numbers: curvbench and torch versions, the commit, the device and the threads torch used
VERSION, GIT_COMMIT, TORCH_VERSION = "curvbench_version", "git_commit", "torch_version"
DEVICE, THREADS = "device", "threads"
# ---- params of runs whose method or task comes from outside curvbench: which code, which version
METHOD_CLASS, METHOD_SOURCE, METHOD_VERSION = "method_class", "method_source", "method_version"
TASK_SOURCE, TASK_VERSION = "task_source", "task_version"
# tags of trials and to-target runs
TRIAL, STUDY = "trial", "study"
TARGET, TARGET_REACHED = "target", "target_reached"
# tags of a tune parent
SEARCH_STATE, BEST_TRIAL, BEST_RUN_ID, SCORED_ON = "search_state", "best_trial", "best_run_id", "scored_on"
SPACE_PARAM = "space."  # a tune parent (params): space.<hyperparameter> = its range or grid, as searched
SEARCH_SECONDS = "search_train_seconds"  # a tune parent (metric): training seconds of all its trials' runs
SEEDS_PER_TRIAL = "seeds_per_trial"  # a tune parent (tag): seeds each trial is scored over (the median)
TRIALS_RUN = "trials_run"  # a tune parent (metric): trials finished, complete or pruned
# tags of a to-target parent
BASELINE = "baseline"  # the entry the others were compared with

# ---- run kinds (the KIND tag)
TUNE, TRIAL_RUN, TO_TARGET, TO_TARGET_RUN, REPORT = "tune", "trial", "to-target", "to-target-run", "report"
PARENT_KINDS = (TUNE, TO_TARGET, REPORT)  # runs that hold other runs or a report, not training curves

# ---- experiments: MLflow 3 opens an experiment of this kind on its runs, not on the GenAI overview
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
REPORTS_EXPERIMENT = "curvbench-reports"

# ---- Optuna study and trial attributes: the second contract between a writer (search/) and its readers
STUDY_PARENT, STUDY_URI = "mlflow_parent", "mlflow_uri"  # the study's MLflow parent run, and its store (masked)
STUDY_FINGERPRINT = "fingerprint"  # the settings the study's trials were made under
STUDY_SETTINGS = "settings"  # ... those settings themselves, to name what differs when a study is refused
TRIAL_RUN_ID, TRIAL_RUN_IDS = "run_id", "run_ids"  # a trial's MLflow run (its first seed's), every seed's runs
TRIAL_REASON = "reason"  # why a trial failed or was pruned
TRIAL_SEED_SCORES = "seed_scores"  # a trial's score per seed (its value is their median)
TRIAL_TRAIN_SECONDS = "train_seconds"  # training seconds of a trial's runs, every seed
TRIAL_MLFLOW = "mlflow"  # set when a trial's run was held while its tracking server was away
