"""User mistakes end in one clear line and exit code 2, never a traceback.

Everything that can be wrong in what a user asked for (a config value, a path, a plug-in) raises
``UserError`` with a message naming the value and how to fix it; entry points turn it into
``error: <message>`` on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error shape: one ``error: ...`` line (naming --help) and exit 2,
    instead of a usage block that can run to several lines."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see {self.prog} --help")


def check_output_file(path: str, what: str) -> None:
    """A file we are about to write: its folder exists and is writable, and it is not a folder."""
    p = os.path.abspath(path)
    folder = os.path.dirname(p)
    if os.path.isdir(p):
        raise UserError(f"{what} '{path}' is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UserError(f"{what} '{path}': folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(p) and not os.access(p, os.W_OK)):
        raise UserError(f"{what} '{path}' cannot be written (permission denied); give a writable path")
