"""What every command of the application shares: its name, its exit codes, and the one error a user can fix."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

PROG = "fer-study"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UserError(Exception):
    """A mistake in the command line, a params file or the data: one line, exit code 2, before anything is written."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler, a deadline) raises KeyboardInterrupt inside this block or decorated function,
    as Ctrl-C does, so that one handler stops a run or its workers cleanly; off the main thread, signals stay alone."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def one_line(text: str) -> str:
    return " ".join(str(text).split())
