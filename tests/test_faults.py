"""Kills: SIGKILL leaves nothing RUNNING for long (the next command ends it), SIGTERM ends the run as KILLED with
its real time, and a tune worker killed mid-trial has its point run again at once by the next one."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from curvbench.tracking.client import Tracker

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "curvbench"]


def start(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)


def wait_for(query, db, timeout=120):
    """Poll the store until `query` returns a row."""
    end = time.time() + timeout
    while time.time() < end:
        if db.is_file():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                    row = con.execute(query).fetchone()
                if row:
                    return row
            except sqlite3.Error:
                pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {query}")


EPOCH_LOGGED = ("SELECT r.run_uuid FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
                "WHERE r.status = 'RUNNING' AND m.key = 'train_seconds'")


def test_sigkill_of_train_leaves_a_run_that_the_next_command_ends_as_failed(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    p = start(["train", "quickstart", "--methods", "sgd", "--epochs", "200", "-q"], tmp_path)
    (run_id,) = wait_for(EPOCH_LOGGED, db)
    p.kill()
    p.wait(timeout=30)
    tracker = Tracker(f"sqlite:///{db}")  # what every writing command does first
    assert len(tracker.reaped) == 1 and f"pid {p.pid}" in tracker.reaped[0]
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "ended without closing the run: killed or crashed" in run.data.tags["status_reason"]
    assert run.data.tags["outcome"] == "process ended"  # the report says so, not "failed by an error"
    assert run.data.metrics["train_seconds"] > 0  # what it had logged is kept


def test_sigterm_ends_the_run_killed_with_its_real_time_and_the_signal(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    p = start(["train", "quickstart", "--methods", "sgd", "--epochs", "200", "-q"], tmp_path)
    (run_id,) = wait_for(EPOCH_LOGGED, db)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert out.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM: the current run was ended as KILLED")
    row = next(line for line in out.splitlines() if "│" in line and "sgd s0" in line and "killed" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    ms_per_step, train_s = float(cells[-2]), float(cells[-1])
    assert ms_per_step > 0 and train_s > 0  # not 0.00
    run = Tracker(f"sqlite:///{db}").client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["status_reason"] == "interrupted by SIGTERM"


def test_a_tune_worker_killed_mid_trial_has_its_point_run_again_by_the_next_tune(tmp_path):
    storage = tmp_path / "mlruns" / "optuna.db"
    args = ["tune", "quickstart", "--methods", "sgd", "--space", "sgd.lr=0.1,0.05", "--epochs", "12", "-q"]
    p = start(args, tmp_path)
    wait_for("SELECT trial_id FROM trials WHERE state = 'RUNNING'", storage)
    wait_for("SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE r.status = 'RUNNING' "
             "AND t.key = 'kind' AND t.value = 'trial'", tmp_path / "mlruns" / "mlflow.db")
    p.kill()
    p.wait(timeout=30)
    again = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    study = optuna.load_study(study_name="quickstart-sgd-grid", storage=f"sqlite:///{storage}")
    trials = study.get_trials()
    complete = sorted(t.params["lr"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == [0.05, 0.1]  # every point, each once, without waiting for the heartbeat grace
    [failed] = [t for t in trials if t.state == TrialState.FAIL]
    assert f"pid {p.pid}" in failed.user_attrs["reason"]
    client = Tracker(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").client
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]  # + the parent
    assert len([r for r in runs if r.data.tags.get("kind") == "tune"]) == 1
