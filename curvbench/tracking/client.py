"""MLflow tracking: where the store is, experiments, runs, per-epoch metrics in one call, honest end states."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from curvbench import record
from curvbench.tracking.stores import mask as mask_uri
from curvbench.tracking.stores import sqlite_path as _sqlite_path
from curvbench.tracking.tracked_run import TrackedRun, short_error, warn

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"  # relative to the working directory


def resolve_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; lists become their YAML-ish text."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = "null" if data is None else str(data)
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return sha or None
    except (OSError, subprocess.SubprocessError):
        return None


@contextlib.contextmanager
def sqlite_lock(uri: str):
    """Holds an exclusive lock on DB.lock beside a SQLite database while a store opens it: processes that open
    one new store at the same moment would otherwise run its schema migrations concurrently and break it."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(str(db) + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


SQLITE_LOCK_SECONDS = 120  # how long a write waits for another process's lock on a SQLite store


def _opened_client(uri: str, write: bool = True):
    from mlflow.tracking import MlflowClient

    from curvbench.errors import CurvbenchError
    from curvbench.tracking.stores import absolute_sqlite, explain, mask

    client_uri = absolute_sqlite(uri)  # MLflow keeps one store per URI string for the process's life
    if _sqlite_path(uri) is not None and "?" not in uri:
        client_uri = f"{client_uri}?timeout={SQLITE_LOCK_SECONDS}"  # wait for another writer rather than fail at 5 s
    try:
        with sqlite_lock(uri) if write else contextlib.nullcontext():
            client = MlflowClient(tracking_uri=client_uri)
            client.search_experiments(max_results=1)  # creates and migrates the tables now, under the lock
    except Exception as e:  # noqa: BLE001 - every store failure becomes one line naming the store
        why = explain(e) or f"{e.__class__.__name__}: {e}"
        raise CurvbenchError(f"tracking store {mask(uri)}: {why}") from None
    return client


class Tracker:
    """A thin layer over MlflowClient: no global state, so nested runs and several stores stay explicit.

    The store is checked before anything is logged (scheme, file, folder, server, driver: see stores.py).
    `write=False` opens it for reading only (a report on a read-only store): no folder, no lock file."""

    def __init__(self, uri: str | None = None, write: bool = True):
        import logging

        import mlflow  # noqa: F401 - configures its loggers on import; quieten them afterwards

        from curvbench.tracking.stores import check_tracking_uri

        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri = resolve_uri(uri)
        self.shown_uri = mask_uri(self.uri)  # what is printed or stored anywhere: never a password
        check_tracking_uri(self.uri, write)
        db = _sqlite_path(self.uri)
        self.artifact_root = None
        if db is not None:
            self.artifact_root = (db.parent / "artifacts").resolve().as_uri()
        self.remote = self.uri.startswith(("http://", "https://"))
        if self.remote:  # a server that went away: fail a write in seconds (curvbench holds it), not in minutes
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            os.environ.setdefault("CURVBENCH_FRESH_CONNECTIONS", "1")  # http_headers.py: 6 ms a request, not 48
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is the summary's
        self.client = _opened_client(self.uri, write)
        self._experiments: dict[str, str] = {}
        self.reaped: list[str] = []  # runs of dead processes this tracker ended, as "name (reason)"
        if write:
            self.reaped = end_orphaned_runs(self.client)

    def experiment_id(self, name: str) -> str:
        """The experiment, created when missing, marked as model training so that MLflow's UI opens on its runs,
        with curvbench's saved view of the runs table (ui_view: the key columns)."""
        if name not in self._experiments:
            import time

            from curvbench.tracking.ui_view import view_tag

            own = dict([(record.EXPERIMENT_KIND_TAG, record.EXPERIMENT_KIND), view_tag(int(time.time() * 1000))])
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                location = f"{self.artifact_root}/{name}" if self.artifact_root else None
                try:
                    self._experiments[name] = self.client.create_experiment(name, artifact_location=location, tags=own)
                except Exception:  # created meanwhile by another process
                    self._experiments[name] = self.client.get_experiment_by_name(name).experiment_id
            else:
                self._experiments[name] = exp.experiment_id
                for key, value in own.items():  # an experiment made by an older curvbench; a view kept as it is
                    if key not in exp.tags:
                        self.client.set_experiment_tag(exp.experiment_id, key, value)
        return self._experiments[name]

    def create_run(self, experiment: str, run_name: str, tags: dict[str, str], look_first: bool = True) -> str:
        """The run `tags[RUN_KEY]` names: with `look_first`, the one an earlier try made when there is one (its
        answer lost), else a new one. Its id."""
        exp = self.experiment_id(experiment)
        key = tags.get(record.RUN_KEY)
        if look_first and key:
            found = self.client.search_runs([exp], f"tags.`{record.RUN_KEY}` = '{key}'", max_results=1)
            if found:
                return found[0].info.run_id
        return self.client.create_run(exp, run_name=run_name, tags=tags).info.run_id

    def start(
        self,
        experiment: str,
        run_name: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> "TrackedRun":
        import uuid

        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        all_tags.update(owner_tags())
        if parent_run_id:
            all_tags[record.PARENT] = parent_run_id
        all_tags[record.RUN_KEY] = uuid.uuid4().hex  # a retried create finds the run an earlier try made
        tries = []

        def create() -> str:
            look = bool(tries)  # the server may have made the run and lost the answer: never make it twice
            tries.append(1)
            return self.create_run(experiment, run_name, all_tags, look_first=look)

        where = mask_uri(self.uri)
        try:
            run = TrackedRun(self.client, create(), remote=self.remote, name=run_name, uri=where)
        except Exception as e:  # noqa: BLE001 - a server gone mid-sweep: the run is created when it is back
            if not self.remote:
                raise
            warn(f"tracking server {where} could not start run {run_name} ({short_error(e)}); training goes on and "
                 f"the run is created when the server answers")
            run = TrackedRun(self.client, None, remote=True, create=create, name=run_name, uri=where)
            run.creation = {"experiment": experiment, "run_name": run_name, "tags": all_tags}  # for `resend`
            run._last_try = time.time()
        run.log_params(params or {})  # a write like the others: queued to a server, held with the rest while it is away
        return run


def owner_tags() -> dict[str, str]:
    """Which process runs a run (or a trial): a later command on the same host can tell whether it lives."""
    import socket

    return {record.HOST: socket.gethostname(), record.PID: str(os.getpid())}


def process_alive(pid: int) -> bool:
    """The process `pid` of this host runs. A zombie (dead, its exit status not yet collected by its parent) does
    not, though signal 0 still reaches it: where the system shows process states (Linux's /proc), it is read."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:  # gone meanwhile, or no /proc (macOS): there, signal 0 had the last word
        return not os.path.exists("/proc/self/stat")
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:][:1] != "Z"  # the state follows the name, which may hold spaces and ")"


def end_orphaned_runs(client) -> list[str]:
    """Runs left RUNNING by a process of this host that is gone (SIGKILL, a crash, a power cut) are ended as
    FAILED with the reason; runs of other hosts are left alone (nothing here can tell whether they live)."""
    import socket

    host = socket.gethostname()
    try:
        exps = [e.experiment_id for e in client.search_experiments()]
        if not exps:
            return []
        runs = client.search_runs(exps, f"attributes.status = 'RUNNING' and tags.`{record.HOST}` = '{host}'",
                                  max_results=1000)
    except Exception:  # noqa: BLE001 - a store that cannot be searched is reported by the command's own calls
        return []
    ended = []
    for r in runs:
        try:
            pid = int(r.data.tags.get(record.PID, ""))
        except ValueError:
            continue
        if pid == os.getpid() or process_alive(pid):
            continue
        reason = f"its process (pid {pid} on {host}) {record.PROCESS_ENDED_REASON}"
        client.set_tag(r.info.run_id, record.STATUS_REASON, reason)
        client.set_tag(r.info.run_id, record.OUTCOME, record.PROCESS_ENDED)
        client.set_terminated(r.info.run_id, "FAILED")
        ended.append(f"{r.info.run_name} ({reason})")
    return ended
