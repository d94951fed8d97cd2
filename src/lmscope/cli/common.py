"""Shared pieces of the CLI: the Typer apps, consoles, --json, progress bars, and the number checks.

Every numeric option carries one of the checks below as its Typer callback (`callback=COUNT`...), so a
bad number is refused in one line naming its flag when the arguments are parsed, before any model
loads. The CLI sweep test walks the app and fails for a numeric option without one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lmscope.errors import InputError

app = typer.Typer(help="Neuron-, feature- and circuit-level interpretability for Hugging Face causal LMs. "
                  "Long commands report progress on stderr (plain lines when it is not a terminal); add --quiet "
                  "anywhere on the command line to silence it.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console(soft_wrap=True)  # summaries stay one line per line (rich would wrap them at the terminal width)
err = Console(stderr=True, soft_wrap=True)

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


MAX_COUNT = 2**31 - 1
"""Largest size or count an option takes: more would not index a tensor, and no run needs it."""
MAX_SEED = 2**32 - 1
"""Largest seed: numpy's generators take 0..2**32-1."""


def flag_of(param: Any) -> str:
    """The option's long flag (`--batch-size`), or the argument's name in capitals (`param`: a click Parameter)."""
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0] if longs else (param.name or "").upper()


def number_check(name: str, ok: Callable[[Any], bool], expected: str) -> Callable[..., Any]:
    """A Typer callback refusing a value for which `ok` is false: `--FLAG: expected EXPECTED, got VALUE`.

    `name` tags the callback (`lmscope_check`), so a test can tell a checked option from an unchecked one."""
    def check(param: typer.CallbackParam, value: Any) -> Any:
        if value is not None and not ok(value):
            raise InputError(f"{flag_of(param)}: expected {expected}, got {value}")
        return value

    check.lmscope_check = name  # type: ignore[attr-defined]
    return check


def at_least(n: int) -> Callable[..., Any]:
    """Integers n..MAX_COUNT: a size or count with a floor of its own (`--max-tokens` needs 2)."""
    return number_check(f"count>={n}", lambda v: n <= v <= MAX_COUNT, f"an integer in {n}..{MAX_COUNT}")


COUNT = at_least(1)
"""Sizes and counts: 1..MAX_COUNT."""
NONNEG = number_check("nonneg", lambda v: 0 <= v <= MAX_COUNT, f"an integer in 0..{MAX_COUNT}")
"""Counts that may be 0 (positions to leave out)."""
INDEX = number_check("index", lambda v: -MAX_COUNT <= v <= MAX_COUNT,
                     f"an integer in -{MAX_COUNT}..{MAX_COUNT}")
"""Positions counted from either end (negative: from the end)."""
SEED = number_check("seed", lambda v: 0 <= v <= MAX_SEED, f"a seed in 0..{MAX_SEED}")
RESIDUE = number_check("residue", lambda v: 0 <= v <= 9, "a residue in 0..9")
FRACTION = number_check("fraction", lambda v: math.isfinite(v) and 0 <= v <= 1, "a number in [0, 1]")
NONNEG_FLOAT = number_check("nonneg-float", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
POSITIVE_FLOAT = number_check("positive-float", lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def one_of(choices: Callable[[], Iterable[str]]) -> Callable[..., Any]:
    """A Typer callback refusing a value not among `choices()` (called when parsed: the library's own list,
    imported lazily so that `lmscope --help` stays fast)."""
    def check(param: typer.CallbackParam, value: Any) -> Any:
        allowed = list(choices())
        if value is not None and value not in allowed:
            raise InputError(f"{flag_of(param)}: got {value!r}, expected one of {', '.join(allowed)}")
        return value

    return check


SeedOpt = Annotated[int, typer.Option(callback=SEED, help="Random seed (sampling, splits, initialisation).")]
