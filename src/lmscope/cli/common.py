"""Shared pieces of the CLI: the Typer apps, consoles, --json, progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help="Neuron-, feature- and circuit-level interpretability for Hugging Face causal LMs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
zoo_app = typer.Typer(help="The model zoo: tiny models trained on lmscope's synthetic corpus.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a summary.")]
ModelArg = Annotated[str, typer.Argument(help="zoo:NAME, a local HF model directory, or a Hugging Face hub id.")]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per stage, shown on stderr (silent with --json or when not a terminal)."""
    if not enabled or not err.is_terminal:
        yield lambda stage, i, n: None
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


