"""tune --workers: worker processes that share one study (SQLite here; tests/test_services.py: PostgreSQL)."""

import signal
import subprocess
import sys
import time

import pytest

from curvbench.cli import workers
from curvbench.errors import CurvbenchError

pytestmark = pytest.mark.slow


def test_each_worker_gets_the_command_without_the_pool_flags_and_its_share():
    argv = ["tune", "r.yaml", "--workers", "2", "--devices=cuda:0,cuda:1", "--epochs", "1"]
    assert workers.strip_own_flags(argv) == ["tune", "r.yaml", "--epochs", "1"]
    plan = workers.plan(argv, 2, ["cuda:0", "cuda:1"], cores=8)
    assert [w.argv[3:] for w in plan] == [
        ["tune", "r.yaml", "--epochs", "1", "--quiet", "--threads", "4", "--device", "cuda:0"],
        ["tune", "r.yaml", "--epochs", "1", "--quiet", "--threads", "4", "--device", "cuda:1"]]
    assert [w.env["CURVBENCH_WORKER"] for w in plan] == ["1", "2"]
    with pytest.raises(CurvbenchError, match="--devices names 1 device"):
        workers.check(2, ["cuda:0"])
    with pytest.raises(CurvbenchError, match="--workers 0: expected 1 or more"):
        workers.check(0, None)


def write(tmp_path, epochs):
    path = tmp_path / "r.yaml"
    path.write_text(f"task: mnist-mini\ntraining: {{epochs: {epochs}, validation: 0.1}}\nmethods: {{sgd: {{lr: 0.1}}}}\n"
                    "search: {sgd: {lr: [0.3, 0.1, 0.03, 0.01]}}\n")
    return path


def tune(tmp_path, path, *extra):
    return subprocess.Popen([sys.executable, "-m", "curvbench", "tune", str(path), "--workers", "2",
                             "--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri",
                             f"sqlite:///{tmp_path}/mlflow.db", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def state(tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    s = optuna.load_study(study_name="r-sgd-grid", storage=f"sqlite:///{tmp_path}/optuna.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("mnist-mini").experiment_id])
    return s.get_trials(deepcopy=False), runs


def both_training(tmp_path, within: float = 300) -> list:
    """Wait until both workers hold a RUNNING trial and each has its MLflow run; returns the two trials."""
    deadline = time.time() + within
    while time.time() < deadline:
        time.sleep(1)
        try:
            trials, runs = state(tmp_path)
        except Exception:  # the study or the experiment is not there yet
            continue
        in_trial = [r for r in runs if r.info.status == "RUNNING" and r.data.tags.get("kind") == "trial"]
        running = [t for t in trials if t.state.name == "RUNNING"]
        if len(running) == 2 and len(in_trial) == 2:
            return running
    raise AssertionError("the two workers never trained at once")


def test_two_workers_share_the_grid_and_the_parent_shows_one_combined_view(tmp_path):
    proc = tune(tmp_path, write(tmp_path, 1))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    trials, runs = state(tmp_path)
    assert sorted(t.params["lr"] for t in trials if t.state.name == "COMPLETE") == [0.01, 0.03, 0.1, 0.3]
    assert len(trials) == 4
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(children) == 4 and len({r.data.tags["curvbench.pid"] for r in children}) == 2
    assert "[tune sgd] done 4, running 0, left 0, best " in err  # the parent's combined line
    assert out.count("sgd: best lr=") == 1  # one summary, the parent's


def test_ctrl_c_stops_every_worker_cleanly_and_the_next_tune_resumes(tmp_path):
    path = write(tmp_path, 12)
    proc = tune(tmp_path, path)
    both_training(tmp_path)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("error: interrupted: every worker ended its running trial")
    trials, runs = state(tmp_path)
    assert [t.state.name for t in trials].count("RUNNING") == 0
    assert all(r.info.status != "RUNNING" for r in runs)
    killed = [r for r in runs if r.info.status == "KILLED" and r.data.tags.get("kind") == "trial"]
    assert len(killed) == 2 and all("SIGINT" in r.data.tags.get("status_reason", "") for r in killed)
    resumed = tune(tmp_path, path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    trials, _ = state(tmp_path)
    assert sorted(t.params["lr"] for t in trials if t.state.name == "COMPLETE") == [0.01, 0.03, 0.1, 0.3]


def test_a_worker_killed_mid_trial_leaves_its_point_to_the_other_and_is_named(tmp_path):
    """SIGKILL of one of two workers while both train: the survivor runs the dead worker's point again (a dead
    process of this host is seen at once), every point is finished, the dead worker's run is ended as FAILED, and
    the command says in one line which worker died and how."""
    import os

    proc = tune(tmp_path, write(tmp_path, 6))
    victim = int(both_training(tmp_path)[0].user_attrs["curvbench.pid"])
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    trials, runs = state(tmp_path)
    assert sorted(t.params["lr"] for t in trials if t.state.name == "COMPLETE") == [0.01, 0.03, 0.1, 0.3]
    assert [t.state.name for t in trials].count("RUNNING") == 0
    assert all(r.info.status != "RUNNING" for r in runs)
    [dead] = [r for r in runs if r.data.tags.get("curvbench.pid") == str(victim) and r.info.status == "FAILED"]
    warning = [line for line in (out + err).splitlines() if line.startswith("warning: worker")]
    assert len(warning) == 1 and f"(pid {victim}) was killed by SIGKILL" in warning[0], out + err
    assert "the other workers ran its trial again" in warning[0]


def test_to_target_with_two_workers_gives_the_summary_one_worker_gives(tmp_path):
    from mlflow.tracking import MlflowClient

    path = tmp_path / "t.yaml"
    path.write_text("task: mnist-mini\ntraining: {epochs: 4, seeds: [0, 1]}\nmethods: {sgd: {lr: 0.1}, lion: {lr: 0.001}}\n")
    summaries = {}
    for n in (1, 2):
        uri = f"sqlite:///{tmp_path}/mlflow-{n}.db"
        proc = subprocess.run([sys.executable, "-m", "curvbench", "to-target", str(path), "--acc", "0.9",
                               "--workers", str(n), "--storage", f"sqlite:///{tmp_path}/queue-{n}.db",
                               "--tracking-uri", uri, "--quiet"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("mnist-mini").experiment_id])
        [parent] = [r for r in runs if r.data.tags.get("kind") == "to-target"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 4
        if n == 2:
            assert len({r.data.tags["curvbench.pid"] for r in children}) == 2  # both workers ran some
        # seconds, and what is computed from them (the speed-up, the tests on per-seed times), differ from one run
        # to the next; reached counts, steps and epochs do not
        timed = ("seconds", "speedup", ".p_")
        summaries[n] = {k: v for k, v in parent.data.metrics.items() if not any(t in k for t in timed)}
        assert {"lion.speedup_vs_sgd", "lion.p_faster", "lion.p_slower"} <= parent.data.metrics.keys()
        assert "2/2" in proc.stdout  # the printed summary
    assert summaries[1] == summaries[2] and summaries[1]["sgd.reached"] == 2


def test_a_worker_on_cuda_n_gets_a_device_its_recipe_accepts_and_a_missing_index_is_refused_first(monkeypatch):
    import torch

    from curvbench.cli.app import _flags
    from curvbench.recipe import loading as recipes

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the device probe, stubbed: a 2-GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    workers.check(2, ["cuda:0", "cuda:1"])
    for w in workers.plan(["tune", "quickstart", "--quiet"], 2, ["cuda:0", "cuda:1"]):
        device = w.argv[w.argv.index("--device") + 1]
        r = recipes.load("quickstart", _flags(device=device).overrides())  # what the worker's command parses
        assert r.training.device == device
        from curvbench.training.timing import resolve_device

        assert resolve_device(r.training.device) == torch.device(device)
    with pytest.raises(CurvbenchError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        workers.check(2, ["cuda:0", "cuda:2"])
    with pytest.raises(CurvbenchError, match="--devices: 'gpu1' is not a device"):
        workers.check(2, ["cuda:0", "gpu1"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CurvbenchError, match="--device cuda:0: no CUDA device is available here"):
        workers.check(1, ["cuda:0"])


def test_scale_batch_with_two_workers_shares_each_search_and_queue_and_all_run_one_winner(tmp_path):
    """scale-batch --workers 2: every batch size's trials and to-target runs are each run once, by both workers
    between them; the to-target runs of a batch size all use the same winner (each worker waited for the other's
    trials before reading it); the parent's summary lists every batch size and entry."""
    import optuna
    from mlflow.tracking import MlflowClient

    path = tmp_path / "s.yaml"
    path.write_text("task: mnist-mini\ntraining: {epochs: 2, batch_size: 50, seeds: [0, 1], target: 0.3, "
                    "schedule: constant}\nmethods: {sgd: {lr: 0.05}, lion: {lr: 0.001}}\nsearch: {sgd: {lr: {low: "
                    "0.01, high: 0.3, log: true}}, lion: {lr: {low: 0.0001, high: 0.01, log: true}}}\n")
    storage, uri = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run([sys.executable, "-m", "curvbench", "scale-batch", str(path), "--batch-sizes", "25,50",
                           "--budget", "3", "--tune-epochs", "1", "--workers", "2", "--storage", storage,
                           "--tracking-uri", uri], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist-mini").experiment_id])
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    targets = [r for r in runs if r.data.tags.get("kind") == "to-target-run"]
    assert len(trials) == 2 * 2 * 3 and len(targets) == 2 * 2 * 2  # batch sizes x methods x (budget, seeds)
    assert len({r.data.tags["curvbench.pid"] for r in trials + targets}) == 2  # both workers took part
    for batch in ("25", "50"):
        for entry in ("sgd", "lion"):
            study = optuna.load_study(study_name=f"s@b{batch}-{entry}-halton", storage=storage)
            done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
            assert len(done) == 3 == len(study.get_trials(deepcopy=False))  # each point once
            ran = {r.data.params[f"methods.{entry}.lr"] for r in targets
                   if r.data.tags["entry"] == entry and r.data.params["training.batch_size"] == batch}
            assert ran == {str(max(done, key=lambda t: t.value).params["lr"])}  # the one winner
            assert any(line.startswith(f"batch {batch}: {entry} steps to target") for line in proc.stdout.splitlines())
