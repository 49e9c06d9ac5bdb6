"""The failures a user can fix: the command line prints their message as one line and exits 2.

Every module that raises an expected, user-facing failure derives its error from ``UserError``
(``CommandError`` here, ``DownloadError``, ``StateError``, ``BackendError``, ``RunError``), so
``pipeline.cli.main`` maps them to exit status 2 in one place, without a list to keep up to date.
"""
from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix; ``str()`` is one line that says what to do, printed without a traceback."""


class CommandError(UserError, RuntimeError):
    """A failure the user can fix; printed as one line, no traceback."""
