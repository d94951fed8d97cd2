"""Progress off a terminal: plain stderr lines at a stage's start and end and every few seconds; --quiet: none."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import run
from lmscope.cli import common


def test_plain_lines_at_start_end_and_every_interval(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    update = common._plain_progress(clock=lambda: now[0])
    for i, t in enumerate([0.0, 1.0, 2.0, 6.0, 7.0, 12.5]):
        now[0] = t
        update("train", i, 10)
    now[0] = 13.0
    update("train", 10, 10)
    update("train", 10, 10)  # the end is reported once
    update("eval", 0, 0)  # an unknown total prints no "/n"
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["train: 0/10 (0 s)", "train: 3/10 (6 s)", "train: 5/10 (12 s)", "train: 10/10 (13 s)",
                     "eval: 0 (0 s)"]


def test_progress_bars_off_a_terminal_print_and_quiet_silences(capsys: pytest.CaptureFixture[str]) -> None:
    with common.progress_bars(True) as stage:
        stage("load", 0, 2)
    assert capsys.readouterr().err == "load: 0/2 (0 s)\n"
    common.QUIET["on"] = True
    try:
        with common.progress_bars(True) as stage:
            stage("load", 0, 2)
    finally:
        common.QUIET["on"] = False
    assert capsys.readouterr().err == ""


def test_a_command_reports_progress_off_a_terminal_and_quiet_anywhere_silences_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "sents.txt"
    corpus.write_text("the cat sat\nMonday Tuesday\n")
    args = ["extract", "zoo:gpt2-tiny", "--corpus", str(corpus), "--points", "blocks.0.mlp.hook_post"]
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 0 and err.splitlines() == ["shards: 1/1 (0 s)"]
    code, _, err = run(capsys, "--quiet", *args, "--out", str(tmp_path / "b"))
    assert code == 0 and err == ""
    code, _, err = run(capsys, *args, "--quiet", "--out", str(tmp_path / "c"))
    assert code == 0 and err == ""
    assert common.QUIET["on"] is True  # set per invocation by main(); the next run resets it
    code, _, err = run(capsys, "info", "zoo:no-such-model")
    assert code == 2 and common.QUIET["on"] is False
