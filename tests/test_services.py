"""Sweeps against real services: a PostgreSQL study storage and an MLflow tracking server on PostgreSQL.

.ci/services.sh starts both (CI runs it) and exports their URLs; without them these tests skip, saying so."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

POSTGRES = os.environ.get("CURVBENCH_TEST_POSTGRES")
TRACKING = os.environ.get("CURVBENCH_TEST_TRACKING")
pytestmark = [pytest.mark.services,
              pytest.mark.skipif(not (POSTGRES and TRACKING), reason="no PostgreSQL and MLflow tracking server: run "
                                 "`source .ci/services.sh start` (as .ci/run does) to start them")]
GRID_12 = "search: {sgd: {lr: [0.3, 0.1, 0.03, 0.01], weight_decay: [0, 1.0e-4, 1.0e-3]}}\n"


def curvbench(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "curvbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    return f"study-{tag}", f"exp-{tag}"


def recipe(tmp_path, epochs=1, grid=GRID_12):
    path = tmp_path / "r.yaml"
    path.write_text(f"task: mnist-mini\ntraining: {{epochs: {epochs}, validation: 0.1, threads: 1}}\n"
                    f"methods: {{sgd: {{lr: 0.1}}}}\n" + grid)
    return path


def study(name):
    import optuna

    from curvbench.search.studies import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(POSTGRES))  # one pool for the whole module


def test_three_workers_run_a_12_point_grid_once_each_on_postgresql_and_the_tracking_server(tmp_path, names):
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    study_name, experiment = names
    code, out, err = finish(curvbench("tune", str(recipe(tmp_path)), "--workers", "3", "--storage", POSTGRES,
                                      "--study", study_name, "--tracking-uri", TRACKING, "--experiment", experiment))
    assert code == 0, err
    trials = study(study_name).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 12 and len(trials) == 12
    points = {(t.params["lr"], t.params["weight_decay"]) for t in complete}
    assert len(points) == 12  # no grid point twice
    client = MlflowClient(TRACKING)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    [parent] = [r for r in runs if r.data.tags.get("kind") == "tune"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 12 and all(r.info.status == "FINISHED" for r in children)
    assert parent.info.run_id == study(study_name).user_attrs["mlflow_parent"]
    assert "sgd: best" in out
    pids = {r.data.tags.get("curvbench.pid") for r in children}
    assert len(pids) >= 2  # the work was shared
    report = subprocess.run([sys.executable, "-m", "curvbench", "report", "--tracking-uri", TRACKING,
                             "--experiment", experiment, "--out", str(tmp_path / "report"), "--no-log"],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "| mnist-mini | sgd" in (tmp_path / "report" / "report.md").read_text()


POPPER = """
import sys
import optuna
from curvbench.search.studies import drop_duplicate, open_storage, take
url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
study = optuna.load_study(study_name=name, storage=open_storage(url))
points = [{"a": i // 4, "b": i % 4} for i in range(n)]
while (trial := take(study, points, url)) is not None:
    trial.suggest_int("a", 0, n)  # two params: another worker may read the trial between the two
    trial.suggest_int("b", 0, 3)
    if not drop_duplicate(study, trial, "point"):
        study.tell(trial, 1.0)
"""


def test_four_workers_popping_a_20_point_queue_at_full_speed_queue_each_point_once(names):
    """Workers that race for the queue (no training between pops) still queue every point once: no trial beyond
    the 20, none failed as a duplicate. Without the study lock around queueing, this study held 33 to 80 trials;
    when a trial's point was read from its params before all were suggested, 21 to 24."""
    import optuna
    from optuna.trial import TrialState

    from curvbench.search.studies import open_storage

    study_name, _ = names
    optuna.create_study(study_name=study_name, storage=open_storage(POSTGRES))
    procs = [subprocess.Popen([sys.executable, "-c", POPPER, POSTGRES, study_name, "20"], stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    trials = study(study_name).get_trials(deepcopy=False)
    assert len(trials) == 20 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted((t.params["a"], t.params["b"]) for t in trials) == [(i // 4, i % 4) for i in range(20)]


def test_a_killed_workers_point_is_run_again_by_a_later_worker(tmp_path, names):
    from optuna.trial import TrialState

    from curvbench.search.studies import point_of

    study_name, experiment = names
    path = recipe(tmp_path, epochs=15, grid="search: {sgd: {lr: [0.1, 0.03, 0.01]}}\n")
    args = ["tune", str(path), "--storage", POSTGRES, "--study", study_name, "--tracking-uri", TRACKING,
            "--experiment", experiment, "--quiet"]
    doomed = curvbench(*args)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until it is inside a trial
        try:
            running = [t for t in study(study_name).get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        except KeyError:
            running = []
        if running:
            break
        time.sleep(0.5)
    assert running and doomed.poll() is None
    time.sleep(2)
    doomed.send_signal(signal.SIGKILL)  # power cut: nothing gets to clean up
    doomed.wait()
    killed = running[0]
    code, out, err = finish(curvbench(*args))  # a later worker on the same study
    assert code == 0, err
    trials = study(study_name).get_trials(deepcopy=False)
    first = next(t for t in trials if t.number == killed.number)
    assert first.state == TrialState.FAIL and "died" in first.user_attrs.get("reason", "")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["lr"] for t in complete) == [0.01, 0.03, 0.1]
    # the point it was queued with: `running` may have been read after the pop and before the suggest
    assert point_of(first)["lr"] in [t.params["lr"] for t in complete if t.number > killed.number]


@pytest.mark.parametrize("change, expected", [
    (lambda url: url.replace("curvbench:curvbench@", "curvbench:wrong@"), "password authentication failed"),
    (lambda url: url.rsplit("/", 1)[0] + "/nosuchdb", 'database "nosuchdb" does not exist'),
])
def test_bad_credentials_or_database_are_one_line_errors_with_the_password_masked(tmp_path, change, expected):
    url = change(POSTGRES)
    code, out, err = finish(curvbench("tune", str(recipe(tmp_path)), "--storage", url, "--tracking-uri", TRACKING))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("error: study storage postgresql://curvbench:***@") and expected in line
    assert "curvbench:curvbench@" not in line and "curvbench:wrong@" not in line


SECRET = os.environ.get("CURVBENCH_TEST_SECRET_POSTGRES")  # postgresql://keeper:PASSWORD@host:port


def everything_stored(url: str) -> str:
    """Every row of every table of a PostgreSQL database, as text."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    text = []
    with engine.connect() as conn:
        for table in sqlalchemy.inspect(conn).get_table_names():
            for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                text.append(" ".join(map(str, row)))
    engine.dispose()
    return "\n".join(text)


@pytest.mark.skipif(not SECRET, reason="no role with a secret password: .ci/services.sh makes one")
def test_a_password_in_a_store_url_or_the_environment_is_never_printed_logged_or_stored(tmp_path):
    """tune with two workers, to-target and report against a PostgreSQL study storage and a PostgreSQL MLflow
    store whose URLs carry a password, and a tracking password in the environment: the password is in none of
    the output, no row of either database, no file written."""
    password = SECRET.split(":")[2].split("@")[0]
    storage, store = f"{SECRET}/secret_optuna", f"{SECRET}/secret_mlflow"
    env = dict(os.environ, MLFLOW_TRACKING_PASSWORD="Env-Pw-7731", MLFLOW_TRACKING_USERNAME="someone")
    path = recipe(tmp_path, grid="search: {sgd: {lr: [0.3, 0.1]}}\n")
    path.write_text(path.read_text().replace("threads: 1}", "threads: 1, target: 0.2}"))
    outputs = []
    for args in (["tune", str(path), "--workers", "2", "--storage", storage, "--tracking-uri", store],
                 ["tune", str(path), "--storage", storage, "--tracking-uri", store, "--dry-run"],
                 ["to-target", str(path), "--storage", storage, "--tracking-uri", store],
                 ["report", "--tracking-uri", store, "--out", str(tmp_path / "report")],
                 ["tune", str(path), "--storage", storage.replace(password, "wrong"), "--tracking-uri", store]):
        code, out, err = finish(curvbench(*args, cwd=tmp_path, env=env))
        outputs.append(out + err)
        assert code == (2 if "wrong" in " ".join(args) else 0), (args, out + err)
    written = [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    studies, runs = everything_stored(storage), everything_stored(store)
    assert "mlflow_parent" in studies and "methods.sgd.lr" in runs and "report.md" in " ".join(
        str(p) for p in tmp_path.rglob("*"))  # what is searched holds the sweep
    for text, where in ((" ".join(outputs), "the output"), (studies, "the study storage"),
                        (runs, "the MLflow store"), ("\n".join(written), "a file written")):
        assert password not in text, where
        assert "Env-Pw-7731" not in text, where
    assert "keeper:***@" in " ".join(outputs)  # the URL is shown, masked
