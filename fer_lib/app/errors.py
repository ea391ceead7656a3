"""What every command of the application shares: its name, its exit codes, and the one error a user can fix."""

from __future__ import annotations

PROG = "fer-study"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UserError(Exception):
    """A mistake in the command line, a params file or the data: one line, exit code 2, before anything is written."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())
