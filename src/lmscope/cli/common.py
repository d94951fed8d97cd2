"""Shared pieces of the CLI: the Typer apps, consoles, --json, progress bars."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help="Neuron-, feature- and circuit-level interpretability for Hugging Face causal LMs. "
                  "Long commands report progress on stderr (plain lines when it is not a terminal); add --quiet "
                  "anywhere on the command line to silence it.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
zoo_app = typer.Typer(help="The model zoo: tiny models trained on lmscope's synthetic corpus.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a summary.")]
ModelArg = Annotated[str, typer.Argument(help="zoo:NAME, a local HF model directory, or a Hugging Face hub id.")]
AllowMismatchOpt = Annotated[bool, typer.Option(
    "--allow-model-mismatch", help="Use a store or dictionary made with a different model anyway (same "
    "dimensions, other weights): a warning instead of a refusal. The results then mix two models.")]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


QUIET = {"on": False}
"""Set by `--quiet` (anywhere on the command line, see `lmscope.cli.main`): no progress output at all."""

PLAIN_EVERY_S = 5.0
"""Off a terminal, a stage's progress line is printed when it starts, ends, and at most this often between."""


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Progress per stage on stderr: rich bars in a terminal, plain lines otherwise (logs and CI see progress
    too); silent with --quiet. `--json` keeps stdout clean either way, since progress goes to stderr."""
    if QUIET["on"]:
        yield lambda stage, i, n: None
        return
    if not err.is_terminal:
        yield _plain_progress()
        return
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)
    tasks: dict[str, Any] = {}
    with bars:
        def update(stage: str, i: int, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=n)
            bars.update(tasks[stage], completed=i, total=n)

        yield update


def _plain_progress(clock: Callable[[], float] = time.monotonic) -> Callable[[str, int, int], None]:
    """`stage: i/n (elapsed)` lines: at a stage's start and end, and every PLAIN_EVERY_S seconds in between."""
    started: dict[str, float] = {}
    last: dict[str, float] = {}
    ended: set[str] = set()

    def update(stage: str, i: int, n: int) -> None:
        now = clock()
        if stage not in started:
            started[stage] = last[stage] = now
        elif stage in ended or (now - last[stage] < PLAIN_EVERY_S and not (n > 0 and i >= n)):
            return
        last[stage] = now
        if n > 0 and i >= n:
            ended.add(stage)
        total = f"/{n}" if n > 0 else ""
        sys.stderr.write(f"{stage}: {i}{total} ({now - started[stage]:.0f} s)\n")
        sys.stderr.flush()

    return update


def checked_out_dir(value: str | None) -> str | None:
    """Typer callback for `--out`: an output directory lmscope could not write (a file, under a file, not
    writable) is refused when the arguments are parsed, before any model loads (`fileio.check_output_dir`)."""
    if value:
        from lmscope.fileio import check_output_dir

        check_output_dir(value)
    return value
