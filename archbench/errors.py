"""User mistakes end in one clear line and exit code 2, never a traceback.

Everything that can be wrong in what a user asked for (a config value, a path, a plug-in) raises
``UserError`` with a message naming the value and how to fix it; entry points turn it into
``error: <message>`` on stderr and exit status 2.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import NoReturn


class UserError(Exception):
    """A mistake in what the user asked for; the message says what was wrong and how to fix it."""

    exit_code = 2


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(UserError.exit_code)


@contextmanager
def user_errors_exit():
    """Turn a UserError raised inside into the one-line message and exit 2."""
    try:
        yield
    except UserError as e:
        fail(str(e))
