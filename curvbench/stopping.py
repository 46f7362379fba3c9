"""A stop asked for by a signal, acted on at a safe point.

A worker process (tune --workers) must not be interrupted inside a database write: its signal handler only
records the request here, and the training loop (between steps) and the search loop (between trials) raise
Terminated where the run and the trial can be ended cleanly."""

from __future__ import annotations

from curvbench.errors import Terminated

requested: str | None = None  # the signal's name, once one asked to stop


def request(signal_name: str) -> None:
    global requested
    requested = signal_name


def check() -> None:
    """Raise Terminated (a KeyboardInterrupt) when a stop was requested."""
    if requested is not None:
        raise Terminated(requested)
