"""`curvbench resend`: the runs whose tracking server never answered again before their command ended, kept as
JSON in mlruns/unlogged/ (tracked_run.py), sent to the store now. Each file's writes are made in their order; a run
that was never created is created first with the experiment, name and tags it was started with (found instead
when an earlier try made it). A file that was sent moves to `sent/` beside it, so that a second resend sends
nothing twice."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from curvbench.errors import CurvbenchError
from curvbench.tracking.client import Tracker
from curvbench.tracking.tracked_run import UNLOGGED_DIR, TrackedRun


@dataclass
class Resent:
    sent: list[str] = field(default_factory=list)  # "run name (run id)" of each run sent
    left: list[str] = field(default_factory=list)  # one line per file that could not be sent, and why


def resend(folder: str | Path = UNLOGGED_DIR, uri: str | None = None) -> Resent:
    """Send every kept run of `folder` to `uri` (default: the store each file names; give the URL with its
    password when the file shows it masked)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CurvbenchError(f"{folder}: no such folder of unlogged runs (they are kept in {UNLOGGED_DIR}/ of the "
                             f"folder the command ran in)")
    out, trackers = Resent(), {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            target = uri or data["tracking_uri"]
            writes = data["writes"]
        except (ValueError, KeyError, TypeError) as e:
            out.left.append(f"{path}: not a file of unlogged writes ({e.__class__.__name__}: {e})")
            continue
        if "***" in target:
            out.left.append(f"{path}: its store {target} is shown without its password; pass --tracking-uri")
            continue
        if target not in trackers:
            trackers[target] = Tracker(target)  # checked: one line naming the store when it cannot be used
        tracker = trackers[target]
        creation = data.get("create")
        run_id = data.get("run_id") or (creation and tracker.create_run(creation["experiment"], creation["run_name"],
                                                                        creation["tags"]))
        if not run_id:
            out.left.append(f"{path}: the run was never created and the file does not say how to create it")
            continue
        run = TrackedRun(tracker.client, run_id, name=data.get("run_name", ""), uri=tracker.shown_uri)
        for kind, payload in writes:
            run._apply(kind, payload)
        (folder / "sent").mkdir(exist_ok=True)
        path.rename(folder / "sent" / path.name)
        out.sent.append(f"{data.get('run_name') or run_id} ({run_id})")
    return out

