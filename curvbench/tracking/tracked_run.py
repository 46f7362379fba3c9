"""One MLflow run's writes, and how they reach the store.

Against a local store a write is made where it is called. Against a tracking server a write is queued and a
background thread sends it, so training does not wait on the network between epochs (a log_batch to a server
costs several milliseconds); writes of one run that queue up behind a request in flight go out as one
log_batch. Ending a run waits until its writes are delivered (or held), so a trial completes in its study only
after its run is finished on the server. A write the server does not take does not stop training: the run
keeps every write in order, says so once on stderr, sends them all when the server answers again, and if it
never does before the command ends (after a grace for a server being restarted), writes them to
mlruns/unlogged/ and says the run is not logged."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from curvbench import record

RETRY_SECONDS = 30  # how often a run whose tracking server went away tries again to send what it holds
GRACE_SECONDS = 60  # how long a command that ends waits for its tracking server to take the writes it holds
RETRY_PAUSE = 3  # seconds between those tries
UNLOGGED_DIR = "mlruns/unlogged"  # where a run that could never be sent is written (JSON), for the record
PARAM_CHARS = 6000  # MLflow's longest param value
# MLflow's limits on one log_batch call
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS, BATCH_ENTITIES = 1000, 100, 100, 1000

_DELIVERY = threading.RLock()  # one delivery at a time per process: a run's order, and the held runs' list


class TrackedRun:
    """One MLflow run (see the module's docstring). `remote`: the store is a tracking server."""

    def __init__(self, client, run_id: str | None, remote: bool = False, create=None, name: str = "",
                 uri: str = ""):
        self.client, self.run_id = client, run_id
        self.remote, self.name, self.uri = remote, name, uri
        self._create = create  # run_id is None: the server was away when the run began; this creates it
        self.creation: dict | None = None  # what `create` makes (experiment, name, tags): kept with unlogged writes
        self.pending: list[tuple[str, Any]] = []
        self._last_try = 0.0
        self.ended = False

    # ---- what the engine and the commands write
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self._write("metrics", [(k, float(v), ts, step) for k, v in metrics.items() if v is not None])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self._write("tags", {k: str(v) for k, v in tags.items()})

    def log_params(self, params: dict[str, Any]) -> None:
        if params:
            self._write("params", {k: str(v)[:PARAM_CHARS] for k, v in params.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        self._write("text", (text, artifact_file))

    def log_file(self, path: str, artifact_path: str | None = None) -> None:
        self._write("file", (path, artifact_path))

    def end(self, status: str, reason: str = "") -> None:
        """status: FINISHED, FAILED or KILLED; the reason goes into the tag status_reason. Returns when the run's
        writes are delivered, or held because the server is away."""
        if self.ended:
            return
        if reason:
            self.set_tags({record.STATUS_REASON: reason[:5000]})
        self._write("end", status)
        self.ended = True
        if not self.remote:
            return
        _SENDER.wait(self)
        with _DELIVERY:
            if self.pending:  # the server is still away: held by this process, sent with the next write that goes
                self._flush(force=True)  # through, or kept in a file by settle_held() when the command ends
            if self.pending and self not in _HELD:
                _HELD.append(self)

    # ---- delivery
    def _write(self, kind: str, payload) -> None:
        if self.remote:
            _SENDER.put(self, kind, payload)
        else:
            self._apply(kind, payload)

    def _deliver(self, kind: str, payload) -> None:
        """In the sending thread: make one (possibly merged) write, or hold it while the server is away."""
        if self.pending or self.run_id is None:  # already holding writes back: keep the order
            self.pending.append((kind, payload))
            self._flush()
            return
        try:
            self._apply(kind, payload)
        except Exception as e:  # noqa: BLE001 - any failure of a remote write: the run goes on without the server
            self.pending.append((kind, payload))
            self._last_try = time.time()
            warn(f"tracking server {self.uri} did not take a write of run {self.name or self.run_id} "
                 f"({short_error(e)}); training goes on, and what the run logs is sent when the server answers")

    def _apply(self, kind: str, payload) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if kind in ("metrics", "tags", "params", "batch"):
            batch = payload if kind == "batch" else {kind: payload}
            metrics = [Metric(*m) for m in batch.get("metrics", [])]
            tags = [RunTag(k, v) for k, v in batch.get("tags", {}).items()]
            params = [Param(k, v) for k, v in batch.get("params", {}).items()]
            for i in range(0, max(len(params), 1), BATCH_PARAMS):  # more params than one call takes: several
                self.client.log_batch(self.run_id, metrics=metrics if i == 0 else [], tags=tags if i == 0 else [],
                                      params=params[i : i + BATCH_PARAMS])
        elif kind == "text":
            self.client.log_text(self.run_id, *payload)
        elif kind == "file":
            self.client.log_artifact(self.run_id, *payload)
        elif kind == "end":
            self.client.set_terminated(self.run_id, payload)

    def _flush(self, force: bool = False) -> bool:
        """Send what the run holds; True when nothing is held any more."""
        if not self.pending and self.run_id is not None:
            return True
        if not force and time.time() - self._last_try < RETRY_SECONDS:
            return False
        self._last_try = time.time()
        held = len(self.pending)
        try:
            if self.run_id is None:
                self.run_id = self._create()
            while self.pending:
                self._apply(*self.pending[0])
                self.pending.pop(0)
        except Exception:  # noqa: BLE001 - still away: keep holding
            return False
        warn(f"tracking server {self.uri} answers again: {held} held write(s) of run {self.name} sent")
        if self in _HELD:
            _HELD.remove(self)
        for run in list(_HELD):  # runs that ended while it was away
            if run in _HELD and not run._flush(force=True):
                break  # away again
        return True

    def _keep_unlogged(self) -> None:
        import json
        import uuid
        from pathlib import Path

        folder = Path(UNLOGGED_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{(self.run_id or 'unstarted')[:8]}-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps({"tracking_uri": self.uri, "run_id": self.run_id, "run_name": self.name,
                                    "create": self.creation if self.run_id is None else None,
                                    "writes": self.pending}, default=str, indent=1))
        warn(f"run {self.name or self.run_id} is not logged: tracking server {self.uri} did not answer by its end; "
             f"its {len(self.pending)} write(s) are kept in {path}")


class _Batch:
    """Consecutive metrics, tags and params writes of one run, merged into one log_batch within MLflow's limits."""

    def __init__(self):
        self.payload: dict[str, Any] = {"metrics": [], "tags": {}, "params": {}}

    def fits(self, kind: str, payload) -> bool:
        metrics, tags, params = (len(self.payload[k]) + (len(payload) if k == kind else 0)
                                 for k in ("metrics", "tags", "params"))
        return (metrics <= BATCH_METRICS and tags <= BATCH_TAGS and params <= BATCH_PARAMS
                and metrics + tags + params <= BATCH_ENTITIES)

    def add(self, kind: str, payload) -> None:
        if kind == "metrics":
            self.payload["metrics"].extend(payload)
        else:
            self.payload[kind].update(payload)


class _Sender:
    """The thread that delivers remote runs' writes, in the order they were made."""

    MERGEABLE = ("metrics", "tags", "params")

    def __init__(self):
        self.queue: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.active: TrackedRun | None = None  # the run whose write is being delivered
        self.thread: threading.Thread | None = None

    def put(self, run: TrackedRun, kind: str, payload) -> None:
        with self.cond:
            self.queue.append((run, kind, payload))
            if self.thread is None or not self.thread.is_alive():
                import atexit

                self.thread = threading.Thread(target=self._loop, name="curvbench-tracking", daemon=True)
                self.thread.start()
                atexit.register(self.wait)  # a library caller that never ends its runs still has them delivered
            self.cond.notify_all()

    def wait(self, run: TrackedRun | None = None) -> None:
        """Until nothing of `run` (of any run, when None) is queued or being delivered."""
        with self.cond:
            while self.active is not None and (run is None or self.active is run) or any(
                    run is None or r is run for r, _, _ in self.queue):
                self.cond.wait()

    def _next(self):
        with self.cond:
            while not self.queue:
                self.cond.wait()
            run, kind, payload = self.queue.popleft()
            if kind in self.MERGEABLE:  # what queued up behind a request in flight goes out in one request
                batch = _Batch()
                batch.add(kind, payload)
                while self.queue and self.queue[0][0] is run and self.queue[0][1] in self.MERGEABLE \
                        and batch.fits(*self.queue[0][1:]):
                    batch.add(*self.queue.popleft()[1:])
                kind, payload = "batch", batch.payload
            self.active = run
            return run, kind, payload

    def _loop(self) -> None:
        while True:
            run, kind, payload = self._next()
            try:
                with _DELIVERY:
                    run._deliver(kind, payload)
            except Exception as e:  # noqa: BLE001 - never let the thread die: later writes would wait forever
                warn(f"run {run.name or run.run_id}: a write could not be made ({short_error(e)})")
            finally:
                with self.cond:
                    self.active = None
                    self.cond.notify_all()


_SENDER = _Sender()
_HELD: list[TrackedRun] = []  # runs that ended while their tracking server was away, still holding writes


def settle_held(grace: float | None = None) -> int:
    """When a command ends: every queued write delivered; runs still holding writes because their tracking server
    is away are tried again every few seconds for up to `grace` seconds (CURVBENCH_TRACKING_GRACE, default 60; a
    server being restarted comes back in that time); what still does not go through, or everything at once on
    Ctrl-C, is kept in a file (`curvbench resend` sends it later). Returns how many runs were kept so."""
    import os

    from curvbench import stopping

    _SENDER.wait()
    if grace is None:
        grace = float(os.environ.get("CURVBENCH_TRACKING_GRACE", GRACE_SECONDS))
    deadline = time.time() + grace
    with _DELIVERY:
        try:
            for run in list(_HELD):
                if run in _HELD:
                    run._flush(force=True)  # one that goes through sends the other held runs after it
            if _HELD and grace > 0:
                warn(f"{len(_HELD)} run(s) still hold writes for tracking server {_HELD[0].uri}: trying again for up "
                     f"to {grace:.0f} s (Ctrl-C keeps them in {UNLOGGED_DIR}/ now)")
            while _HELD and time.time() < deadline and stopping.requested is None:
                time.sleep(min(RETRY_PAUSE, max(deadline - time.time(), 0)))
                _HELD[0]._flush(force=True)
        except KeyboardInterrupt:
            pass
        kept = [run for run in _HELD if run.pending]
        for run in kept:
            run._keep_unlogged()
        _HELD.clear()
    return len(kept)


def short_error(e: Exception) -> str:
    return " ".join(f"{e.__class__.__name__}: {e}".split())[:160]


def warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
