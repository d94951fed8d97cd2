"""The `lmscope` command: parse arguments, call the library, print or write. No analysis logic here.

`--quiet`, anywhere on the command line, silences progress on stderr for any command. Errors the
user can fix (`InputError`) print one line on stderr and exit with code 2; anything else is a
bug and exits with 1. Each command group lives in its own module and registers on the shared app.
"""

from __future__ import annotations

import logging
import os
import sys

# Before torch loads (OpenMP reads it once): idle OpenMP threads sleep instead of spinning. On a shared or
# small machine spinning threads cost several times the wall time (4.5x measured on 2 busy cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lmscope.cli import activations, core, zoo  # noqa: F401  (registers the commands)
from lmscope.cli.autointerp import autointerp_app
from lmscope.cli.causal import mediate, patch  # noqa: F401  (registers the commands)
from lmscope.cli.circuits import circuit  # noqa: F401  (registers the command)
from lmscope.cli.common import QUIET, app, err
from lmscope.cli.data import data_app
from lmscope.cli.dictionary import dict_app
from lmscope.cli.heads import heads_app
from lmscope.cli.neurons import neurons_app
from lmscope.cli.whitebox import whitebox_app
from lmscope.errors import InputError, Interrupted

app.add_typer(neurons_app, name="neurons")
app.add_typer(dict_app, name="dict")
app.add_typer(heads_app, name="heads")
app.add_typer(whitebox_app, name="whitebox")
app.add_typer(autointerp_app, name="autointerp")
app.add_typer(data_app, name="data")
__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app, turning InputError into one line on stderr and exit code 2."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # lmscope reports what matters itself
    logging.getLogger("transformers").setLevel(logging.ERROR)
    args = list(sys.argv[1:] if argv is None else argv)
    QUIET["on"] = "--quiet" in args
    args = [a for a in args if a != "--quiet"]  # accepted anywhere, for every command
    try:
        app(args=args, prog_name="lmscope")
    except InputError as e:
        err.print(f"lmscope: error: {e}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except Interrupted as e:
        err.print(f"lmscope: interrupted: {e}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(130) from None
    except SystemExit as e:
        if e.code == 130:  # Ctrl-C outside a command that says more (Typer exits 130 silently)
            err.print("lmscope: interrupted (files are written atomically: each output is whole or absent)",
                      markup=False, highlight=False, soft_wrap=True)
        raise
