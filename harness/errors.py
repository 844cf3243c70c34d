"""User mistakes end in one clear line and exit code 2, never a traceback."""
from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(Exception):
    """A mistake in what the user asked for; the message says what was wrong and how to fix it."""

    exit_code = 2


def fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(UserError.exit_code)


@contextmanager
def user_errors_exit():
    """Turn a UserError raised inside into the one-line message and exit 2."""
    try:
        yield
    except UserError as e:
        fail(str(e))
