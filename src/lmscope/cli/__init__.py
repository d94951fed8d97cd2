"""The `lmscope` command: parse arguments, call the library, print or write. No analysis logic here.

`--quiet`, anywhere on the command line, silences progress on stderr for any command. Errors the
user can fix (`InputError`, and Typer's usage errors) print one line on stderr and exit with code 2;
anything else is a bug and exits with 1.

One way to register commands: a module defines plain functions (top-level commands) or a `typer.Typer`
(a command group), and the two tables below, COMMANDS and GROUPS, put them on the app. Library errors
name Python arguments (`InputError.arg`); `flag_message` turns them into flags here, in one place.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from typing import Any

# Before torch loads (OpenMP reads it once): idle OpenMP threads sleep instead of spinning. On a shared or
# small machine spinning threads cost several times the wall time (4.5x measured on 2 busy cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from typer import Abort

from lmscope.cli import activations, autointerp, causal, circuits, core, data, heads, neurons, report, whitebox, zoo
from lmscope.cli.common import QUIET, app, err, flag_of
from lmscope.cli.dictionary import dict_app
from lmscope.errors import InputError, Interrupted

try:  # recent Typer vendors click; older Typer used the click package
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[no-redef,assignment]

COMMANDS = (activations.extract, core.demo, core.info, causal.patch, causal.mediate, circuits.circuit,
            report.report)
"""Top-level commands, named after their functions."""
GROUPS = {"zoo": zoo.zoo_app, "neurons": neurons.neurons_app, "dict": dict_app, "heads": heads.heads_app,
          "whitebox": whitebox.whitebox_app, "autointerp": autointerp.autointerp_app, "data": data.data_app}
"""Command groups: `lmscope NAME COMMAND`."""
for _command in COMMANDS:
    app.command()(_command)
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)

FLAGS = {"l1_coefficient": "--l1", "n_iters": "--iters", "dictionary": "--dict", "n_samples": "--samples",
         "units": "--neurons", "unit": "--neuron", "from_residue": "--from", "to_residue": "--to",
         "out_dir": "--out", "directory": "--transcoders", "every": "--checkpoint-every", "base_url": "--llm-url",
         "task": "--heldout", "dtype": "--llm-dtype"}
"""Library argument names whose flag is neither the command's parameter of that name nor `--` + the name."""
__all__ = ["COMMANDS", "FLAGS", "GROUPS", "app", "command_flags", "flag_message", "main"]
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@functools.cache
def _root() -> Any:
    """The click command tree of the app (built once: every command is registered at import)."""
    import typer.main

    return typer.main.get_command(app)


def command_flags(args: list[str]) -> dict[str, str]:
    """`{parameter name: flag}` of the command `args` invoke (`{"batch_size": "--batch-size", "model": "MODEL"}`);
    empty when `args` name no command."""
    command = _root()
    for a in args:
        sub = getattr(command, "commands", {}).get(a)
        if sub is None:
            break
        command = sub
    if hasattr(command, "commands"):
        return {}
    return {p.name: flag_of(p) for p in command.params if p.name}


def flag_message(e: InputError, flags: dict[str, str] | None = None) -> str:
    """The error's message with its leading argument name (`batch_size: ...`, recorded in `e.arg` or just written
    so) replaced by the flag: the command's own (`flags`, from `command_flags`), else FLAGS, else `--` + the name
    with `-` for `_` where the library recorded it; other messages are unchanged."""
    message = str(e)
    arg = getattr(e, "arg", None) or message.partition(":")[0]
    if not _NAME.fullmatch(arg) or not message.startswith(f"{arg}:"):
        return message
    flag = (flags or {}).get(arg) or FLAGS.get(arg)
    if flag is None and getattr(e, "arg", None):
        flag = "--" + arg.replace("_", "-")
    return message if flag is None else flag + message[len(arg):]


def _fail(message: str) -> None:
    err.print(f"lmscope: error: {message}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app; a user's mistake is one line on stderr and exit code 2."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # lmscope reports what matters itself
    logging.getLogger("transformers").setLevel(logging.ERROR)
    args = list(sys.argv[1:] if argv is None else argv)
    QUIET["on"] = "--quiet" in args
    args = [a for a in args if a != "--quiet"]  # accepted anywhere, for every command
    try:
        code = app(args=args, prog_name="lmscope", standalone_mode=False)
    except InputError as e:
        _fail(flag_message(e, command_flags(args)))
        raise SystemExit(2) from None
    except Interrupted as e:
        err.print(f"lmscope: interrupted: {e}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(130) from None
    except NoArgsIsHelpError as e:  # `lmscope neurons`: the group's help, as Typer shows it
        from typer import rich_utils

        rich_utils.rich_format_error(e)
        raise SystemExit(e.exit_code) from None
    except UsageError as e:  # a bad flag or a value of the wrong type: one line, with where to find help
        where = f"; see `{e.ctx.command_path} --help`" if e.ctx is not None else ""
        _fail(f"{e.format_message().rstrip('.')}{where}")
        raise SystemExit(e.exit_code) from None
    except Abort:
        _fail("aborted")
        raise SystemExit(1) from None
    if isinstance(code, int) and code == 130:  # Ctrl-C outside a command that says more
        err.print("lmscope: interrupted (files are written atomically: each output is whole or absent)",
                  markup=False, highlight=False, soft_wrap=True)
    if isinstance(code, int) and code != 0:
        raise SystemExit(code)
