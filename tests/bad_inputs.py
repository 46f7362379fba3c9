"""Bad inputs against the `curvbench` command line, each in a folder of its own: every one must end with one line
`error: ...` naming the file, URL, field or flag, the right exit code, no traceback, and no run left RUNNING.

Used by tests/test_bad_inputs.py; run it as a script to count the outcomes over the whole list:

    python tests/bad_inputs.py            # tried, clean, traceback, wrong code, dangling runs
"""

from __future__ import annotations

import gzip
import os
import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from conftest import synthetic_digits, write_idx  # noqa: E402

QUICK = ["--epochs", "1", "--methods", "sgd", "-q"]
QUICK_TARGET = ["--max-epochs", "1", "--methods", "sgd", "-q"]  # to-target's budget flag


@dataclass
class Case:
    name: str
    args: list[str]
    code: int  # the exit status expected
    says: str  # a piece of the one error line (or of the output, for exit 0)
    setup: Callable[[Path], None] = lambda d: None
    within: float = 120.0  # seconds
    env: dict = field(default_factory=dict)
    traceback_shown: bool = False  # CURVBENCH_DEBUG: the traceback is asked for; the code and the line still hold


# ------------------------------------------------------------------------------------------------ setups
def mnist(d: Path, **change) -> Path:
    raw = d / "data" / "MNIST" / "raw"
    x, y = synthetic_digits(300, 0)
    xt, yt = synthetic_digits(100, 1)
    x, y = change.get("x", x), change.get("y", y)
    write_idx(raw / "train-images-idx3-ubyte", x, compress=True)
    write_idx(raw / "train-labels-idx1-ubyte", y, compress=True)
    write_idx(raw / "t10k-images-idx3-ubyte", xt)
    write_idx(raw / "t10k-labels-idx1-ubyte", yt)
    (d / "r.yaml").write_text("task: {dataset: mnist, data_dir: data, download: false}\n"
                              "training: {epochs: 1, device: cpu}\nmethods: [sgd]\n")
    return raw


def truncated_gz(d):
    p = mnist(d) / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:500])


def not_gzip(d):
    (mnist(d) / "train-images-idx3-ubyte.gz").write_bytes(b"<html>not found</html>" * 20)


def labels_out_of_range(d):
    x, y = synthetic_digits(300, 0)
    y = y.copy()
    y[7] = 42
    mnist(d, y=y)


def small_images(d):
    mnist(d, x=np.zeros((300, 8, 8), np.uint8))


def float_labels(d):
    raw = mnist(d)
    y = np.random.default_rng(0).random(300).astype(">f4")
    head = bytes([0, 0, 0x0D, 1]) + (300).to_bytes(4, "big")
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(head + y.tobytes()))


def conll(d: Path, train: bytes | None = None, valid: bool = True):
    folder = d / "data" / "conll2003"
    folder.mkdir(parents=True)
    good = b"EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter B-PER\nBlackburn I-PER\n\n"
    (folder / "train.txt").write_bytes(train if train is not None else good * 5)
    (folder / "test.txt").write_bytes(good)
    if valid:
        (folder / "valid.txt").write_bytes(good)
    (d / "r.yaml").write_text("task: {dataset: conll2003, data_dir: data, download: false}\n"
                              "training: {epochs: 1, device: cpu, batch_size: 2}\nmethods: [sgd]\n")


def store_folder(d):
    (d / "mlruns" / "mlflow.db").mkdir(parents=True)


def store_garbage(d):
    (d / "mlruns").mkdir()
    (d / "mlruns" / "mlflow.db").write_bytes(random.Random(0).randbytes(5000))


def store_truncated(d):
    (d / "mlruns").mkdir()
    (d / "mlruns" / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)


def mlruns_file(d):
    (d / "mlruns").write_text("not a folder\n")


def study_garbage(d):
    (d / "mlruns").mkdir()
    (d / "mlruns" / "optuna.db").write_bytes(random.Random(1).randbytes(5000))


def recipe(text: str):
    def setup(d):
        (d / "r.yaml").write_text(text)

    return setup


def deep(d):
    n = 20_000
    (d / "r.yaml").write_text("task: mnist-mini\nmethods: {sgd: {lr: " + "[" * n + "1" + "]" * n + "}}\n")


def busy_port(d):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    BUSY.append(s)
    (d / "port").write_text(str(s.getsockname()[1]))


BUSY: list = []


_TEMPLATE: list[Path] = []


def store(d: Path):
    """A tracking store with one finished run in it, made once and copied."""
    import shutil
    import tempfile

    if not _TEMPLATE:
        from curvbench.tracking.client import Tracker

        folder = Path(tempfile.mkdtemp()) / "mlruns"
        run = Tracker(f"sqlite:///{folder}/mlflow.db").start("mnist", "mnist-sgd-s0", {}, {"task": "mnist"})
        run.log_metrics({"test_accuracy": 0.5, "train_loss": 1.0}, step=1)
        run.end("FINISHED")
        _TEMPLATE.append(folder)
    shutil.copytree(_TEMPLATE[0], d / "mlruns")


def fifo_recipe(d):
    os.mkfifo(d / "r.yaml")  # a reader of it would wait for a writer for ever


def empty_mnist(d):
    mnist(d, x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0, np.uint8))


def file_named(name):
    def setup(d):
        (d / name).write_text("x\n")

    return setup


# ------------------------------------------------------------------------------------------------ the list
CASES = [
    # stores
    Case("store is a folder", ["train", "quickstart", *QUICK], 2, "is a folder, not a SQLite database", store_folder),
    Case("store is garbage", ["train", "quickstart", *QUICK], 2, "is not a SQLite database", store_garbage),
    Case("store is truncated", ["train", "quickstart", *QUICK], 2, "truncated", store_truncated),
    Case("mlruns is a file", ["train", "quickstart", *QUICK], 2, "mlruns is a file, not a folder", mlruns_file),
    Case("unknown scheme", ["train", "quickstart", *QUICK, "--tracking-uri", "foo://bar"], 2, "unknown scheme 'foo'"),
    Case("garbage uri", ["train", "quickstart", *QUICK, "--tracking-uri", "sqlite:/x"], 2,
         "sqlite:/x: not a URL; expected sqlite:///PATH"),
    Case("unreachable server", ["train", "quickstart", *QUICK, "--tracking-uri", "http://127.0.0.1:9"], 2,
         "cannot reach the MLflow tracking server", within=20),
    Case("storage garbage", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--storage", "nonsense"], 2,
         "--storage nonsense: expected an Optuna RDB storage URL"),
    Case("storage postgres unreachable", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--storage",
                                          "postgresql://me:secret@127.0.0.1:9/db"], 2, "postgresql://me:***@127.0.0.1:9/db",
         within=30),
    Case("storage garbage file", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK], 2,
         "optuna.db is not a SQLite database", study_garbage),
    Case("storage cannot be created", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--storage",
                                       "sqlite:////proc/curvbench/o.db"], 2, "cannot create the folder /proc/curvbench"),
    # data
    Case("truncated gz", ["train", "r.yaml", "-q"], 2, "train-images-idx3-ubyte.gz: not a complete gzip file",
         truncated_gz),
    Case("not gzip", ["train", "r.yaml", "-q"], 2, "train-images-idx3-ubyte.gz: not a complete gzip file", not_gzip),
    Case("labels out of range", ["train", "r.yaml", "-q"], 2, "train-labels-idx1-ubyte.gz: expected labels 0 to 9",
         labels_out_of_range),
    Case("images too small", ["train", "r.yaml", "-q"], 2, "expected 28x28 images", small_images),
    Case("float labels", ["train", "r.yaml", "-q"], 2, "expected integer class labels, got float32", float_labels),
    Case("conll not utf-8", ["train", "r.yaml", "-q"], 2, "train.txt:2: not UTF-8 text",
         lambda d: conll(d, b"EU B-ORG\nr\xe9jects O\n\n")),
    Case("conll binary", ["train", "r.yaml", "-q"], 2, "train.txt: a binary file", lambda d: conll(d, b"\x00\x01EU O\n\n")),
    Case("conll without validation", ["train", "r.yaml", "-q"], 2, "no validation file",
         lambda d: conll(d, valid=False)),
    # tune
    # a task without a validation split of its own: tune holds one out of train, and says so (not an error)
    Case("tune on val without val", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--on", "val"], 0,
         "note: trials are scored on val: 10% of train held out"),
    Case("tune on train", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--on", "train"], 2,
         "--on: expected val or test"),
    Case("tune overflowing value", ["tune", "quickstart", "--space", "sgd.lr=1e39,0.1", *QUICK], 0,
         "pruned (diverged)"),
    Case("tune zero trials", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--trials", "0"], 2,
         "--trials: expected an integer from 1 to 1000000"),
    Case("tune negative trials", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--trials", "-1"], 2,
         "--trials: expected an integer from 1 to 1000000"),
    Case("tune out in a missing folder", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--out",
                                          "nowhere/best.yaml"], 2, "the folder nowhere does not exist", within=30),
    Case("tune workers 0", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--workers", "0"], 2,
         "--workers 0: expected 1 or more"),
    Case("tune workers -1", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--workers", "-1"], 2,
         "--workers -1: expected 1 or more"),
    Case("tune space suffix lin", ["tune", "quickstart", "--space", "sgd.lr=1e-3:1:lin", *QUICK], 2,
         "--space sgd.lr=1e-3:1:lin: expected LOW:HIGH or LOW:HIGH:log"),
    Case("tune budget 0", ["tune", "quickstart", "--space", "sgd.lr=1e-3:1:log", *QUICK, "--budget", "0"], 2,
         "--budget: expected an integer >= 1"),
    # to-target and verdicts
    Case("to-target on train", ["to-target", "quickstart", *QUICK_TARGET, "--on", "train"], 2, "--on: expected val or test"),
    Case("to-target workers 0", ["to-target", "quickstart", *QUICK_TARGET, "--workers", "0"], 2,
         "--workers 0: expected 1 or more"),
    Case("to-target seeds too many", ["to-target", "quickstart", *QUICK_TARGET, "--seeds", "100000000000"], 2,
         "--seeds: expected an integer from 1 to 10000"),
    Case("tasks of a recipe whose loader is missing", ["tasks", "r.yaml"], 2, "r.yaml: task: ",
         lambda d: (d / "r.yaml").write_text("task: {loader: 'no_such_module_xyz:make', dataset: x}\nmethods: [sgd]\n")),
    Case("methods of a recipe naming a missing class", ["methods", "r.yaml"], 2, "r.yaml: methods.soap: ",
         lambda d: (d / "r.yaml").write_text("task: mnist-mini\nmethods: {soap: {method: no_such_pkg_xyz.SOAP}}\n")),
    Case("storage mysql without its driver", ["tune", "quickstart", "--space", "sgd.lr=0.1", *QUICK, "--storage",
                                              "mysql://u:s3cr3t@127.0.0.1:1/db"], 2,
         "study storage mysql://u:***@127.0.0.1:1/db: the database driver MySQLdb is not installed; pip install "
         "mysqlclient"),
    Case("tracking uri mysql without its driver", ["train", "quickstart", *QUICK, "--tracking-uri",
                                                   "mysql://u:s3cr3t@127.0.0.1:1/db"], 2,
         "tracking store mysql://u:***@127.0.0.1:1/db: the database driver MySQLdb is not installed"),
    Case("storage with a dialect driver curvbench does not know", ["to-target", "quickstart", *QUICK_TARGET, "--acc", "0.5",
         "--storage", "mysql+mysqlconnector://u:s3cr3t@127.0.0.1:1/db"], 2, "the database driver mysql is not "
         "installed"),
    Case("resend without kept runs", ["resend"], 2, "mlruns/unlogged: no such folder of unlogged runs"),
    Case("to-target seed and seeds", ["to-target", "quickstart", *QUICK_TARGET, "--seed", "3", "--seeds", "2"], 2,
         "--seed and --seeds: give one"),
    Case("tune seed and seeds", ["tune", "quickstart", *QUICK, "--space", "sgd.lr=0.1", "--seed", "3", "--seeds", "2"],
         2, "--seed and --seeds: give one"),
    Case("to-target unknown baseline", ["to-target", "quickstart", *QUICK_TARGET, "--seeds", "2", "--baseline", "lion"], 2,
         "--baseline lion: not among the entries run (sgd)"),
    Case("verdict budget 0", ["verdict", "quickstart", "--budget", "0", "-q"], 2, "--budget: expected an integer >= 1"),
    Case("report claims unknown measure", ["report", "--claims", "c.yaml", "--out", "rep"], 2,
         "claims[0].measure: expected one of seconds, epochs, steps",
         lambda d: (store(d), (d / "c.yaml").write_text(
             "claims:\n  - {task: mnist, claim: fastest, methods: [sgd], measure: joules}\n"))),
    # training that fails
    Case("lr 1e300", ["train", "quickstart", *QUICK, "--set", "methods.sgd.lr=1e300"], 1, "the update overflowed"),
    Case("lion explodes", ["train", "quickstart", "--epochs", "1", "--methods", "lion", "-q", "--set",
                           "methods.lion.lr=10"], 1, "loss exploded"),
    # report
    Case("report unknown parent", ["report", "--parent", "0123456789abcdef0123456789abcdef", "--out", "rep"], 2,
         "no such run in the store", store),
    Case("report parent not an id", ["report", "--parent", "x' OR '1'='1", "--out", "rep"], 2,
         "expected a run id of 32 hexadecimal digits", store),
    Case("report task with a quote", ["report", "--task", "mn'ist", "--out", "rep"], 2, "no training runs", store),
    Case("report out is a file", ["report", "--out", "afile"], 2, "--out afile: is a file",
         lambda d: (store(d), file_named("afile")(d))),
    Case("report without a store", ["report", "--out", "rep"], 2, "mlruns/mlflow.db does not exist"),
    # recipes and the command line
    Case("deep nesting", ["train", "r.yaml", "-q"], 2, "r.yaml: the YAML is nested too deeply", deep),
    Case("nesterov without momentum", ["train", "r.yaml", "-q"], 2, "methods.sgd.nesterov",
         recipe("task: mnist-mini\nmethods: {sgd: {nesterov: true}}\n")),
    Case("entry name with +", ["train", "r.yaml", "-q"], 2, 'methods.sgd+mom: expected an entry name',
         recipe("task: mnist-mini\nmethods: {sgd+mom: {method: sgd, momentum: 0.9}}\n")),
    Case("unknown method", ["train", "quickstart", "--methods", "adamx", "-q"], 2, "--methods: unknown method 'adamx'"),
    Case("missing recipe", ["train", "nope", "-q"], 2, "recipe 'nope' not found"),
    Case("ui port out of range", ["ui", "--port", "99999"], 2, "--port 99999: expected a port from 1 to 65535"),
    Case("ui busy port", ["ui", "--port", "@port"], 2, "cannot be used", busy_port),
    Case("epochs too large", ["train", "quickstart", "--methods", "sgd", "-q", "--set",
                              "training.epochs=100000000000000000000"], 2, "training.epochs: expected an integer"),
    Case("seed too large", ["train", "quickstart", *QUICK, "--seed", "99999999999999999999"], 2,
         "training.seeds[0]: expected an integer"),
    Case("experiment name too long", ["train", "quickstart", *QUICK, "--experiment", "x" * 1000], 2,
         "experiment: expected a string of at most 256 characters"),
    Case("recipe is a fifo", ["train", "r.yaml", "-q"], 2, "r.yaml: not a regular file", fifo_recipe, within=30),
    Case("empty mnist split", ["train", "r.yaml", "-q"], 2, "train-images-idx3-ubyte.gz: holds no images", empty_mnist),
    Case("ui garbage uri", ["ui", "--tracking-uri", "garbage"], 2, "--tracking-uri garbage: no such store"),
    Case("debug keeps exit 2", ["train", "quickstart", "--methods", "adamx", "-q"], 2,
         "--methods: unknown method 'adamx'", env={"CURVBENCH_DEBUG": "1"}, traceback_shown=True),
    Case("usage: bad integer", ["train", "quickstart", "--epochs", "abc", "-q"], 2, "'--epochs'"),
    Case("usage: unknown command", ["trian", "quickstart"], 2, "No such command 'trian'"),
    Case("usage: unknown option", ["train", "quickstart", "--epoch", "3"], 2, "No such option: --epoch"),
]


@dataclass
class Outcome:
    case: Case
    code: int
    output: str
    seconds: float
    running: int  # runs left RUNNING in the folder's store

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.output or "╭─" in self.output

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("error:")]

    def problems(self) -> list[str]:
        c, out = self.case, []
        if self.traceback != c.traceback_shown:
            out.append("traceback" if self.traceback else "no traceback, though CURVBENCH_DEBUG asked for it")
        if self.code != c.code:
            out.append(f"exit {self.code}, expected {c.code}")
        if c.code != 0 and len(self.error_lines) != 1:
            out.append(f"{len(self.error_lines)} error lines")
        lines = [line for line in self.output.splitlines() if line.strip()]
        if c.code == 2 and lines and not lines[0].startswith("error:") and not c.traceback_shown:  # checked first, warned after: no warning
            out.append(f"a line before the error: {lines[0][:80]!r}")
        if c.says not in " ".join(self.output.split()):
            out.append(f"does not say {c.says!r}")
        if self.running:
            out.append(f"{self.running} run(s) left RUNNING")
        if "s3cr3t" in self.output:  # the password the URL cases carry
            out.append("the password is printed")
        if self.seconds > c.within:
            out.append(f"took {self.seconds:.0f} s (limit {c.within:.0f} s)")
        return out


def running_runs(folder: Path) -> int:
    db = folder / "mlruns" / "mlflow.db"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:
        return 0  # not a database (the case made it so): no runs in it


def run_case(case: Case, folder: Path) -> Outcome:
    folder.mkdir(parents=True, exist_ok=True)
    case.setup(folder)
    args = [a.replace("@port", (folder / "port").read_text()) if a == "@port" else a for a in case.args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **case.env}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "curvbench", *args], cwd=folder, env=env, capture_output=True,
                       text=True, timeout=max(case.within * 3, 60), stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return Outcome(case, p.returncode, p.stdout + p.stderr, seconds, running_runs(folder))


def main() -> int:
    import tempfile

    counts = dict(tried=0, clean=0, traceback=0, wrong_code=0, dangling=0)
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(CASES):
            o = run_case(case, Path(tmp) / f"case{i}")
            bad = o.problems()
            counts["tried"] += 1
            counts["clean"] += not bad
            counts["traceback"] += o.traceback
            counts["wrong_code"] += o.code != case.code
            counts["dangling"] += bool(o.running)
            print(f"{'ok ' if not bad else 'BAD'} {case.name:34s} exit {o.code} {o.seconds:5.1f}s  "
                  f"{'; '.join(bad) or (o.error_lines or [''])[0][:110]}", flush=True)
    print(" ".join(f"{k} {v}" for k, v in counts.items()))
    return 0 if counts["clean"] == counts["tried"] else 1


if __name__ == "__main__":
    sys.exit(main())
