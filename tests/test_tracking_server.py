"""A tracking server that goes away in the middle of a sweep: training goes on, every trial's score stays in the
study, the failure is reported, and the runs are logged when the server is back, or kept as not logged."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on a SQLite store in a folder, on a fixed port, that can be stopped and started again."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the MLflow server did not start")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # gone at once, as a crashed server is
            self.proc.wait()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "server")
    s.folder.mkdir()
    s.start()
    yield s
    s.stop()


def sweep(tmp_path, uri, epochs=12, grace=300):
    """`tune` on a 3-point grid; at its end it waits up to `grace` seconds for the server to take held writes."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: mnist-mini\ntraining: {{epochs: {epochs}, validation: 0.1}}\nmethods: {{sgd: {{lr: 0.1}}}}\n"
                      "search: {sgd: {lr: [0.3, 0.1, 0.03]}}\n")
    return subprocess.Popen([sys.executable, "-m", "curvbench", "tune", str(recipe), "--storage",
                             f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", uri, "--quiet"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CURVBENCH_TRACKING_GRACE": str(grace)})


def trials(tmp_path):
    import optuna

    try:
        return optuna.load_study(study_name="r-sgd-grid", storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()
    except KeyError:
        return []


def wait_for(condition, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def test_runs_are_sent_when_the_server_comes_back(tmp_path, server):
    from mlflow.tracking import MlflowClient

    proc = sweep(tmp_path, server.uri)
    assert wait_for(lambda: any(t.state.name == "RUNNING" for t in trials(tmp_path)))
    server.stop()
    assert wait_for(lambda: sum(t.state.name == "COMPLETE" for t in trials(tmp_path)) >= 2)  # training went on
    server.start()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert "did not take a write" in err or "could not start run" in err
    assert "answers again" in err
    assert sorted(t.params["lr"] for t in trials(tmp_path) if t.state.name == "COMPLETE") == [0.03, 0.1, 0.3]
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist-mini").experiment_id])
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    for r in children:  # every epoch of every run arrived
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")] == list(range(1, 13))


def test_runs_that_never_reach_the_server_are_kept_and_marked_not_logged(tmp_path, server):
    proc = sweep(tmp_path, server.uri, epochs=8, grace=2)
    assert wait_for(lambda: any(t.state.name == "RUNNING" for t in trials(tmp_path)))
    server.stop()
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 3, err[-2000:]  # done, but not all in the store: a code of its own, and the last line
    assert re.match(r"error: \d+ run\(s\) did not reach the tracking store", err.strip().splitlines()[-1])
    assert "`curvbench resend` sends them" in err
    done = [t for t in trials(tmp_path) if t.state.name == "COMPLETE"]
    assert sorted(t.params["lr"] for t in done) == [0.03, 0.1, 0.3]  # every score is in the study
    assert all(t.value is not None for t in done)
    held = [t for t in done if t.user_attrs.get("mlflow", "").startswith("held: sent when the tracking server")]
    assert len(held) == 3
    assert "trying again for up to 2 s" in err and "is not logged: tracking server" in err
    kept = sorted((tmp_path / "mlruns" / "unlogged").glob("*.json"))
    assert len(kept) >= 3
    record = json.loads(kept[0].read_text())
    assert record["tracking_uri"] == server.uri and record["writes"]


def test_curvbench_ui_serves_the_store_and_keeps_the_servers_log_out_of_the_terminal(tmp_path, empty_store_uri):
    """`curvbench ui`: the link and where the log is, on the terminal; the server's access log and warnings in
    that file; Ctrl-C stops the server and its workers, exit 0."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "curvbench", "ui", "--tracking-uri", empty_store_uri, "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=5",
                                       timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the UI did not answer within 120 s")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].startswith("MLflow UI for ") and "workflowType=machine_learning" in lines[0]
    log = Path(lines[1].split("the server's log: ")[1].split(" ")[0])
    assert len(lines) == 2, out  # nothing of the server's own
    assert "experiments/search" in log.read_text()  # its access log went to the file


@pytest.fixture
def empty_store_uri(tmp_path):
    from conftest import new_store

    return new_store(tmp_path / "mlflow.db")
