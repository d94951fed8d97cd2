"""Errors lmscope raises on purpose.

`InputError` is for anything the user can fix (a bad path, hook name, argument or file line); its message
names the culprit, what was found and what was expected. The CLI prints it as one line and exits with 2.
Any other exception escaping the CLI is a bug (exit 1).
"""

from __future__ import annotations


class LmscopeError(Exception):
    """Base class of every error lmscope raises deliberately."""


class InputError(LmscopeError, ValueError):
    """A problem with what the user gave: file, line, argument or value."""


class Interrupted(LmscopeError):
    """The user stopped a long run (Ctrl-C); the message says what was kept and how to continue. Exit 130."""
