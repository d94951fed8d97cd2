"""The `lmscope` command: parse arguments, call the library, print or write. No analysis logic here.

Errors the user can fix (`InputError`) print one line on stderr and exit with code 2; anything else is a
bug and exits with 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lmscope.errors import InputError

app = typer.Typer(help="Neuron-, feature- and circuit-level interpretability for Hugging Face causal LMs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
zoo_app = typer.Typer(help="The model zoo: tiny models trained on lmscope's synthetic corpus.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a summary.")]
ModelArg = Annotated[str, typer.Argument(help="zoo:NAME, a local HF model directory, or a Hugging Face hub id.")]


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar per stage, shown on stderr (silent with --json or when not a terminal)."""
    if not enabled:
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


@app.command()
def demo(out_dir: Annotated[str, typer.Option("--out", help="Directory for report.html and result.json.")]
         = "lmscope-demo",
         overwrite: Annotated[bool, typer.Option(help="Replace report.html/result.json if they exist.")] = False,
         as_json: JsonFlag = False) -> None:
    """Load (or train, first time) the model zoo, check hook parity and write an HTML report.

    Example: lmscope demo --out /tmp/demo && open /tmp/demo/report.html
    """
    from lmscope.demo import run_demo

    with _progress(not as_json) as stage:
        summary = run_demo(out_dir, overwrite=overwrite, stage=stage)
    if as_json:
        _print_json(summary)
        return
    out.print(f"[bold]report[/]  {summary['report']}\n[bold]result[/]  {summary['result']}")
    if summary["heldout_loss"] is not None:
        out.print(f"gpt2-tiny held-out loss {summary['heldout_loss']:.3f} nats (unigram "
                  f"{summary['unigram_loss']:.3f}); ordinal accuracy {summary['ordinal_accuracy']:.1%}")
    out.print(f"hook parity {'ok' if summary['parity_ok'] else '[red]FAILED[/]'}; {summary['seconds']:.1f} s")


@app.command()
def info(model: ModelArg, as_json: JsonFlag = False) -> None:
    """Print a model's family, sizes and hook names.

    Example: lmscope info zoo:gpt2-tiny
    """
    from lmscope import HookedModel

    with _progress(not as_json) as stage:
        m = HookedModel.from_pretrained(model, progress=lambda i, n: stage(f"training {model}", i, n))
    result = {"model": model, "n_params": m.n_params(), **m.cfg.to_dict(), "hook_names": m.hook_names}
    if as_json:
        _print_json(result)
        return
    table = Table(show_header=False, box=None)
    for key in ("model", "family", "model_type", "n_params", "n_layers", "n_heads", "n_kv_heads", "d_model",
                "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn", "parallel_attn_mlp"):
        table.add_row(key, str(result[key]))
    out.print(table)
    per_block = [n.split(".", 2)[2] for n in m.hook_names if n.startswith("blocks.0.")]
    outside = [n for n in m.hook_names if not n.startswith("blocks.")]
    out.print(f"hook points ({len(m.hook_names)}): {', '.join(outside)}; per block blocks.{{l}}.: "
              f"{', '.join(per_block)}")


@zoo_app.command("list")
def zoo_list(as_json: JsonFlag = False) -> None:
    """List the zoo's models and where each is (cache, package, or not trained)."""
    from lmscope.model import zoo

    rows = zoo.listing()
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "family", "location", "description")
    for r in rows:
        table.add_row(r["name"], r["family"], r["location"], r["description"])
    out.print(table)


@zoo_app.command("train")
def zoo_train(name: Annotated[str, typer.Argument(help="Zoo model name, e.g. gpt2-tiny.")],
              out_dir: Annotated[str | None, typer.Option("--out", help="Directory (default: the cache).")] = None,
              overwrite: Annotated[bool, typer.Option(help="Replace an existing directory.")] = False,
              as_json: JsonFlag = False) -> None:
    """Train a zoo model from its seed (reproducible) and save it as an HF directory with its zoo card.

    Example: lmscope zoo train gpt2-tiny --out src/lmscope/model/zoo_weights/gpt2-tiny --overwrite
    """
    from lmscope.model import zoo

    with _progress(not as_json) as stage:
        path = zoo.train(name, out_dir=out_dir, overwrite=overwrite, progress=lambda i, n: stage(name, i, n))
    card = json.loads((path / "zoo_card.json").read_text())
    summary = {"name": name, "path": str(path), "n_params": card["n_params"],
               "heldout_loss": card["heldout_loss"], "unigram_loss": card["unigram_loss"],
               "train_seconds": card["curve"]["seconds"],
               "ordinal_accuracy": card["ordinal"]["in_distribution"]["accuracy"]}
    if as_json:
        _print_json(summary)
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
        _print_json({"name": name, "path": str(found)})
    else:
        out.print(str(found), soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app, turning InputError into one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="lmscope")
    except InputError as e:
        err.print(f"lmscope: error: {e}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
