"""Errors lmscope raises on purpose.

`InputError` is for anything the user can fix (a bad path, hook name, argument or file line); its message
names the culprit, what was found and what was expected. The CLI prints it as one line and exits with 2.
Any other exception escaping the CLI is a bug (exit 1).

Library code names arguments by their Python names ("batch_size: expected an integer >= 1, got 0") and
records the name in `InputError.arg` (`bad_argument` does both); the CLI maps a recorded name to its flag
("--batch-size") in one place (`lmscope.cli.flag_message`), so no library message has to know the CLI.
"""

from __future__ import annotations


class LmscopeError(Exception):
    """Base class of every error lmscope raises deliberately."""


class InputError(LmscopeError, ValueError):
    """A problem with what the user gave: file, line, argument or value.

    `arg`: the Python name of the argument at fault, when the message starts with it (`"arg: ..."`), so a
    front end can name it its own way (the CLI: its flag)."""

    def __init__(self, message: str = "", *, arg: str | None = None) -> None:
        super().__init__(message)
        self.arg = arg


def bad_argument(arg: str, expected: str, got: object) -> InputError:
    """`InputError("arg: expected ..., got ...")` with `arg` recorded: raise it where an argument is wrong."""
    return InputError(f"{arg}: expected {expected}, got {got!r}", arg=arg)


class Interrupted(LmscopeError):
    """The user stopped a long run (Ctrl-C); the message says what was kept and how to continue. Exit 130."""
