"""Whether a process lives, as workers judge a dead worker's trial, and the pool reaping a worker that died while
another still runs (until it is reaped, a dead child is a zombie that signal 0 still reaches)."""

import os
import subprocess
import sys
import time

import pytest

from curvbench.cli import workers
from curvbench.tracking.client import process_alive

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process states are read from /proc")


def state(pid: int) -> str | None:
    """The state letter /proc shows for `pid` (independently of process_alive), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_a_child_that_exited_but_is_not_reaped_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(child.pid)
        os.kill(child.pid, 9)
        deadline = time.time() + 10
        while state(child.pid) != "Z" and time.time() < deadline:  # dead, not waited for: a zombie
            time.sleep(0.05)
        assert state(child.pid) == "Z"
        os.kill(child.pid, 0)  # signal 0 still reaches it: the reason process_alive reads /proc
        assert not process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert state(child.pid) is None and not process_alive(child.pid)
    assert process_alive(os.getpid())


def test_the_pool_reaps_a_worker_that_died_while_another_still_runs(tmp_path):
    """Worker 2 ends at once, worker 1 runs on: while worker 1 runs, worker 2 must be reaped (gone, not a zombie),
    so that worker 1 sees its pid dead and takes over its trial."""
    pidfile = tmp_path / "pid"
    slow = workers.Worker([sys.executable, "-c", "import time; time.sleep(4)"], dict(os.environ), "cpu", 1)
    quick = workers.Worker([sys.executable, "-c", f"import os; open({str(pidfile)!r}, 'w').write(str(os.getpid()))"],
                           dict(os.environ), "cpu", 1)
    seen = []

    def progress():
        if pidfile.exists() and pidfile.read_text():
            seen.append(state(int(pidfile.read_text())))

    exits = workers.run([slow, quick], progress, poll_seconds=0.1)
    assert [code for _, _, code in exits] == [0, 0]
    # reaped within a poll or two of its end, while worker 1 still ran for seconds (not only once all had ended)
    assert seen.count("Z") <= 2 and seen.count(None) >= 10, seen
