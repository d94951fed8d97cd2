"""Reading text input line by line, with every problem reported as `file:line` (an InputError).

Lowest layer of `lmscope.data`: the label formats, the synthetic samples and the CLI's JSONL inputs all
read through here, so a bad byte or a bad JSON line reads the same wherever it happens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmscope.errors import InputError


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a UTF-8 text file (no line ends, `\\r` and a leading BOM removed).

    Lines are split on `\\n` only (not on the other separators `str.splitlines` knows), so line numbers
    match what editors and `grep -n` show. Undecodable bytes raise InputError naming the line.
    """
    source = Path(path)
    try:
        data = source.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{source}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{source}: is a directory, expected a file") from exc
    except OSError as exc:
        raise InputError(f"{source}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise InputError(f"{str(source)!r}: not a usable file name ({exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"{source}:{line}: byte 0x{data[exc.start]:02x} at column {column} is not valid UTF-8; "
            "expected UTF-8 text"
        ) from exc
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    return [line.removesuffix("\r") for line in lines]


def json_lines(path: str | os.PathLike[str], expected: str) -> Iterator[tuple[str, Any]]:
    """`("file:line", parsed object)` for every non-blank line of a JSONL file; a line that is not JSON raises
    InputError naming it and saying what was `expected` there."""
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg}); {expected}") from None
        except RecursionError:
            raise InputError(f"{where}: JSON nested too deeply; {expected}") from None
        yield where, obj
