"""A run's writes to a tracking server: sent by a background thread in the order they were made, merged when they
queue up behind a request in flight, delivered before `end` returns, and held (then sent, or kept) while the
server does not answer. A fake client stands in for the server, so each case is exact and fast."""

import json
import threading

import pytest

from curvbench.tracking import tracked_run
from curvbench.tracking.tracked_run import TrackedRun


class FakeServer:
    """Records each request as (call, what it carried); `gate` holds requests back; `down` makes them fail."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.down = False

    def _request(self, call, what):
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        if self.down:
            raise ConnectionError("connection refused")
        self.calls.append((call, what))

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._request("log_batch", ([(m.key, m.value, m.step) for m in metrics], {p.key: p.value for p in params},
                                    {t.key: t.value for t in tags}))

    def log_text(self, run_id, text, artifact_file):
        self._request("log_text", artifact_file)

    def set_terminated(self, run_id, status):
        self._request("set_terminated", status)


@pytest.fixture(autouse=True)
def no_held_runs():
    yield
    tracked_run._HELD.clear()


def test_training_does_not_wait_and_writes_queued_behind_a_request_are_merged_in_order():
    server = FakeServer()
    run = TrackedRun(server, "run-1", remote=True, name="trial-1", uri="http://tracking")
    server.gate.clear()
    run.log_params({"lr": 0.1})
    assert server.entered.wait(10)  # the params request is in flight and held at the gate
    for epoch in (1, 2, 3):  # these return at once although the server has not answered
        run.log_metrics({"val_accuracy": epoch / 10}, step=epoch)
    run.set_tags({"outcome": "finished"})
    assert server.calls == []
    ended = threading.Thread(target=run.end, args=("FINISHED",))
    ended.start()
    ended.join(0.3)
    assert ended.is_alive()  # end waits for the run's writes
    server.gate.set()
    ended.join(10)
    assert not ended.is_alive()
    assert [c for c, _ in server.calls] == ["log_batch", "log_batch", "set_terminated"]
    assert server.calls[0][1] == ([], {"lr": "0.1"}, {})
    metrics, params, tags = server.calls[1][1]  # the three epochs and the tags: one request, in order
    assert metrics == [("val_accuracy", 0.1, 1), ("val_accuracy", 0.2, 2), ("val_accuracy", 0.3, 3)]
    assert params == {} and tags == {"outcome": "finished"}
    assert server.calls[2][1] == "FINISHED"
    assert run.pending == []


def test_a_merged_write_stays_within_mlflows_batch_limits():
    server = FakeServer()
    run = TrackedRun(server, "run-1", remote=True)
    server.gate.clear()
    run.log_text("recipe", "recipe.yaml")
    assert server.entered.wait(10)
    for i in range(3):
        run.log_metrics({f"m{j}": j for j in range(400)}, step=i)  # 1200 metrics: more than one log_batch takes
    run.log_params({f"p{j}": j for j in range(150)})  # 150 params: more than one log_batch takes
    server.gate.set()
    run.end("FINISHED")
    batches = [what for call, what in server.calls if call == "log_batch"]
    assert all(len(m) <= 1000 and len(p) <= 100 and len(m) + len(p) + len(t) <= 1000 for m, p, t in batches)
    assert sum(len(m) for m, _, _ in batches) == 1200 and sum(len(p) for _, p, _ in batches) == 150
    steps = [step for m, _, _ in batches for _, _, step in m]
    assert steps == sorted(steps)  # epochs in order
    assert server.calls[-1] == ("set_terminated", "FINISHED")


def test_writes_the_server_does_not_take_are_held_then_sent_in_order_when_it_answers(capsys):
    server = FakeServer()
    run = TrackedRun(server, "run-1", remote=True, name="trial-1", uri="http://tracking")
    run.log_metrics({"val_accuracy": 0.1}, step=1)
    server.down = True
    run.log_metrics({"val_accuracy": 0.2}, step=2)
    run.log_metrics({"val_accuracy": 0.3}, step=3)
    run.end("FINISHED", "done")
    assert run.ended and run.pending and run in tracked_run._HELD  # training went on; the writes are held
    assert "did not take a write of run trial-1" in capsys.readouterr().err
    server.down = False
    tracked_run.settle_held()
    assert run.pending == [] and tracked_run._HELD == []
    steps = [step for call, what in server.calls if call == "log_batch" for _, _, step in what[0]]
    assert steps == [1, 2, 3]
    assert server.calls[-1] == ("set_terminated", "FINISHED")
    assert "answers again" in capsys.readouterr().err


def test_writes_never_taken_are_kept_in_a_file_when_the_command_ends(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    server = FakeServer()
    server.down = True
    run = TrackedRun(server, "run-1", remote=True, name="trial-1", uri="http://tracking")
    run.log_metrics({"val_accuracy": 0.5}, step=1)
    run.end("FAILED", "diverged")
    tracked_run.settle_held(grace=0)
    kept = list((tmp_path / "mlruns" / "unlogged").glob("*.json"))
    assert len(kept) == 1
    record = json.loads(kept[0].read_text())
    assert record["run_id"] == "run-1" and record["tracking_uri"] == "http://tracking"
    assert [kind for kind, _ in record["writes"]][-1] == "end" and record["writes"][-1][1] == "FAILED"
    assert "is not logged" in capsys.readouterr().err


def test_a_local_store_is_written_where_the_call_is_made():
    server = FakeServer()
    run = TrackedRun(server, "run-1", remote=False)
    run.log_metrics({"val_accuracy": 0.5}, step=1)
    assert [c for c, _ in server.calls] == ["log_batch"]  # no thread between the call and the store
    server.down = True
    with pytest.raises(ConnectionError):  # and a local store's failure is the caller's
        run.log_metrics({"val_accuracy": 0.6}, step=2)


def test_a_command_that_ends_waits_for_a_server_that_comes_back_within_the_grace(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracked_run, "RETRY_PAUSE", 0.05)
    server = FakeServer()
    server.down = True
    run = TrackedRun(server, "run-1", remote=True, name="trial-1", uri="http://tracking")
    run.log_metrics({"val_accuracy": 0.5}, step=1)
    run.end("FINISHED")
    back = threading.Timer(0.5, lambda: setattr(server, "down", False))  # a restarted server
    back.start()
    tracked_run.settle_held(grace=30)
    back.join()
    assert [c for c, _ in server.calls] == ["log_batch", "set_terminated"]
    assert not (tmp_path / "mlruns" / "unlogged").exists()
    err = capsys.readouterr().err
    assert "trying again for up to 30 s" in err and "answers again" in err


def test_fresh_connections_are_asked_for_only_where_curvbench_turned_them_on(monkeypatch):
    """The installed request-header plugin is the one pyproject names; it adds `Connection: close` to MLflow's
    requests only in a process that set CURVBENCH_FRESH_CONNECTIONS (a Tracker on an http(s) store)."""
    from importlib.metadata import entry_points

    from mlflow.tracking.request_header.registry import resolve_request_headers

    from curvbench.tracking.http_headers import ENV, FreshConnections

    [ep] = [e for e in entry_points(group="mlflow.request_header_provider") if e.name == "curvbench"]
    assert ep.load() is FreshConnections
    monkeypatch.delenv(ENV, raising=False)
    assert resolve_request_headers().get("Connection") != "close"
    monkeypatch.setenv(ENV, "1")
    assert resolve_request_headers()["Connection"] == "close"


def test_kept_runs_are_resent_in_order_created_when_they_never_were_and_never_sent_twice(tmp_path, monkeypatch,
                                                                                        capsys):
    from conftest import new_store
    from mlflow.tracking import MlflowClient

    from curvbench.tracking.client import Tracker
    from curvbench.tracking.resend import resend

    monkeypatch.chdir(tmp_path)
    uri = new_store(tmp_path / "store" / "mlflow.db")
    started = Tracker(uri).start("mnist", "sgd s0", {}, {"task": "mnist"})  # created, then the server went away
    server = FakeServer()
    server.down = True
    kept = TrackedRun(server, started.run_id, remote=True, name="sgd s0", uri="http://tracking")
    for step in (1, 2, 3):
        kept.log_metrics({"val_accuracy": 0.1 * step}, step=step)
    kept.end("FINISHED")

    def away():
        raise ConnectionError("connection refused")

    unstarted = TrackedRun(server, None, remote=True, create=away, name="lion s0", uri="http://tracking")
    unstarted.creation = {"experiment": "mnist", "run_name": "lion s0", "tags": {"task": "mnist", "seed": "0"}}
    unstarted.log_metrics({"val_accuracy": 0.5}, step=1)
    unstarted.end("FAILED", "diverged")
    assert tracked_run.settle_held(grace=0) == 2
    folder = tmp_path / "mlruns" / "unlogged"
    assert len(list(folder.glob("*.json"))) == 2

    done = resend(folder, uri)
    assert len(done.sent) == 2 and not done.left and not list(folder.glob("*.json"))
    client = MlflowClient(uri)
    assert [m.value for m in client.get_metric_history(started.run_id, "val_accuracy")] == pytest.approx([.1, .2, .3])
    assert client.get_run(started.run_id).info.status == "FINISHED"
    [lion] = client.search_runs([client.get_experiment_by_name("mnist").experiment_id], "tags.seed = '0'")
    assert lion.info.run_name == "lion s0" and lion.info.status == "FAILED"
    assert lion.data.tags["status_reason"] == "diverged" and lion.data.metrics["val_accuracy"] == 0.5
    assert resend(folder, uri).sent == []  # the files moved to sent/: nothing goes twice
