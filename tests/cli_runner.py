"""Run the `lmscope` CLI in-process and collect (exit code, stdout, stderr)."""

from __future__ import annotations

import pytest

from lmscope.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
