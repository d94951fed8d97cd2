"""`lmscope demo` and `lmscope info`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lmscope.cli.common import COUNT, JsonFlag, ModelArg, checked_out_dir, out, print_json, progress_bars
from lmscope.data.corpus import CORPUS_HELP
from lmscope.errors import InputError


def demo(out_dir: Annotated[str, typer.Option("--out", callback=checked_out_dir,
                                              help="Directory for report.html and result.json.")]
         = "lmscope-demo",
         model: Annotated[str | None, typer.Option(help="Run the spine on this model and --corpus instead of the "
                                                   "zoo: a directory, .gguf, real:NAME, hub id or zoo:NAME.")] = None,
         corpus: Annotated[str | None, typer.Option(help=CORPUS_HELP + " Only with --model (needed unless zoo:).")]
         = None,
         max_texts: Annotated[int, typer.Option(callback=COUNT, help="With --model: use the first N texts (windows) "
                                                "of the corpus.")] = 16,
         overwrite: Annotated[bool, typer.Option(help="Replace report.html/result.json if they exist.")] = False,
         as_json: JsonFlag = False) -> None:
    """Load (or train, first time) the model zoo, check hook parity and write an HTML report; with --model, run
    the spine on your model and text instead (parity, loss, head detectors, neurons, autointerp; about a minute).

    Example: lmscope demo --out /tmp/demo && open /tmp/demo/report.html
    Your model: lmscope demo --model real:smollm2-135m --corpus docs.txt --out /tmp/mine
    """
    if model is not None:
        from lmscope.demo_real import run_real_demo, summary_lines

        with progress_bars(not as_json) as stage:
            summary = run_real_demo(model, corpus, out_dir, max_texts=max_texts, overwrite=overwrite, stage=stage)
        if as_json:
            print_json(summary)
            return
        for line in summary_lines(summary):
            out.print(line, soft_wrap=True, markup=False, highlight=False)
        return
    if corpus is not None:
        raise InputError("--corpus: applies with --model (the zoo demo runs on lmscope's synthetic corpus)")
    from lmscope.demo import run_demo

    with progress_bars(not as_json) as stage:
        summary = run_demo(out_dir, overwrite=overwrite, stage=stage)
    if as_json:
        print_json(summary)
        return
    out.print(f"[bold]report[/]  {summary['report']}\n[bold]result[/]  {summary['result']}")
    if summary["heldout_loss"] is not None:
        out.print(f"gpt2-tiny held-out loss {summary['heldout_loss']:.3f} nats (unigram "
                  f"{summary['unigram_loss']:.3f}); ordinal accuracy {summary['ordinal_accuracy']:.1%}")
    out.print(f"hook parity {'ok' if summary['parity_ok'] else '[red]FAILED[/]'}; {summary['seconds']:.1f} s")


def info(model: ModelArg, as_json: JsonFlag = False) -> None:
    """Print a model's family, sizes, whether strings get a BOS, and hook names.

    Example: lmscope info zoo:gpt2-tiny     (or real:smollm2-135m, or path/to/model.gguf)
    """
    from lmscope import HookedModel

    verb = "training" if model.startswith("zoo:") else "converting"
    with progress_bars(not as_json) as stage:
        m = HookedModel.from_pretrained(model, progress=lambda i, n: stage(f"{verb} {model}", i, n))
    result = {"model": model, "n_params": m.n_params(), **m.cfg.to_dict(), "prepend_bos": m.prepend_bos,
              "hook_names": m.hook_names}
    if as_json:
        print_json(result)
        return
    table = Table(show_header=False, box=None)
    for key in ("model", "family", "model_type", "n_params", "n_layers", "n_heads", "n_kv_heads", "d_model",
                "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn", "parallel_attn_mlp", "prepend_bos"):
        table.add_row(key, str(result[key]))
    out.print(table)
    per_block = [n.split(".", 2)[2] for n in m.hook_names if n.startswith("blocks.0.")]
    outside = [n for n in m.hook_names if not n.startswith("blocks.")]
    out.print(f"hook points ({len(m.hook_names)}): {', '.join(outside)}; per block blocks.{{l}}.: "
              f"{', '.join(per_block)}")


