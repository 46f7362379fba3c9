"""Errors that end a command with one clear line instead of a traceback."""

from __future__ import annotations

import json
from typing import Any

EXIT_DIVERGED = 1  # a run diverged or failed; the others went on
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: the shell's code for SIGINT
EXIT_UNLOGGED = 3  # the command did its work, but some runs never reached the tracking store (kept to resend)


class CurvbenchError(Exception):
    """A user-facing error: its message is one line, printed as is; the command exits with `exit_code`."""

    exit_code = 2


class RecipeError(CurvbenchError):
    """A recipe that cannot be used: names the file, the field path and what was expected."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path = source, path
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + message)


class Stopped(CurvbenchError):
    """Interrupted, with what was kept and how to resume said; exits 130."""

    exit_code = EXIT_INTERRUPTED


class DatasetMissing(CurvbenchError):
    """The data files of a task are not where curvbench looked, and could not be downloaded."""


def describe(value: Any) -> str:
    """How a bad value is quoted in an error: strings in double quotes, everything else as YAML would say it."""
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or a user's kill): handled exactly as Ctrl-C, but named as what it was."""

    def __init__(self, signal_name: str = "SIGTERM"):
        super().__init__(signal_name)
        self.signal_name = signal_name


def interruption(e: BaseException) -> str:
    """How an interrupted run's end is described: which signal ended it."""
    if isinstance(e, Terminated):
        return f"interrupted by {e.signal_name}"
    return "interrupted by the user (Ctrl-C)"
