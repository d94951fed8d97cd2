"""`lmscope whitebox train | compare`: CRATE language models and their interpretability against GPT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmscope.cli.common import (
    COUNT,
    POSITIVE_FLOAT,
    SEED,
    JsonFlag,
    SeedOpt,
    at_least,
    checked_out_dir,
    out,
    print_json,
    progress_bars,
)
from lmscope.data.corpus import CORPUS_HELP
from lmscope.errors import InputError

whitebox_app = typer.Typer(help="White-box (CRATE) language models: train one, compare its neurons with GPT's.",
                           no_args_is_help=True)
OverwriteOpt = Annotated[bool, typer.Option(help="Replace existing output files.")]
ISTA_MODES = ("overcomplete", "complete")


def _ista_mode(value: str) -> str:
    if value not in ISTA_MODES:
        raise InputError(f"--mode: got {value!r}, expected one of {', '.join(ISTA_MODES)}")
    return value



@whitebox_app.command("train")
def train(out_dir: Annotated[str, typer.Option("--out", callback=checked_out_dir,
                                               help="Directory for the model (HF layout + zoo_card).")],
          corpus: Annotated[str | None, typer.Option(help="Text file, one document per line (default: the "
                                                    "synthetic corpus).")] = None,
          samples: Annotated[int, typer.Option(help="Synthetic documents when no --corpus.", callback=COUNT)] = 120_000,
          layers: Annotated[int, typer.Option(help="Blocks.", callback=COUNT)] = 4,
          d_model: Annotated[int, typer.Option("--d-model", help="Width.", callback=COUNT)] = 128,
          heads: Annotated[int, typer.Option(help="MSSA heads.", callback=COUNT)] = 4,
          expansion: Annotated[int, typer.Option(help="Overcomplete ISTA: codes per dimension.", callback=COUNT)] = 4,
          mode: Annotated[str, typer.Option(help="overcomplete or complete ISTA.",
                                            callback=_ista_mode)] = "overcomplete",
          steps: Annotated[int | None, typer.Option(help="Training steps (default: the zoo recipe's).",
                                                callback=COUNT)] = None,
          batch_size: Annotated[int, typer.Option(help="Windows per step.", callback=COUNT)] = 32,
          seq_len: Annotated[int, typer.Option(help="Tokens per window.", callback=at_least(2))] = 64,
          lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).", callback=POSITIVE_FLOAT)] = 3e-3,
          vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.", callback=at_least(300))] = 2048,
          seed: SeedOpt = 0, overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Train a CRATE model of the given size on a text corpus; the defaults are the zoo's crate-tiny.

    Example: lmscope whitebox train --corpus docs.txt --layers 2 --d-model 64 --steps 500 --out crate/
    """
    import json

    from lmscope.model.training import TrainConfig
    from lmscope.model.zoo import SPECS
    from lmscope.whitebox.train import train_crate

    if d_model % heads:
        raise InputError(f"--d-model, --heads: {d_model} is not divisible by {heads} heads")
    steps = SPECS["crate-tiny"].train.steps if steps is None else steps

    arch = {"n_layer": layers, "n_embd": d_model, "n_head": heads, "ista_expansion": expansion, "ista_mode": mode,
            "n_positions": max(128, seq_len)}
    recipe = TrainConfig(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed)
    with progress_bars(not as_json) as stage:
        path = train_crate(out_dir, corpus=corpus, n_samples=samples, arch=arch, train=recipe,
                           vocab_size=vocab_size, overwrite=overwrite, progress=lambda i, n: stage("training", i, n))
    card = json.loads((path / "zoo_card.json").read_text())
    summary = {"path": str(path), "n_params": card["n_params"], "heldout_loss": card["heldout_loss"],
               "unigram_loss": card["unigram_loss"], "seconds": card["curve"]["seconds"]}
    if as_json:
        print_json(summary)
    else:
        out.print(f"{path}: CRATE, {card['n_params']:,} parameters, held-out loss {card['heldout_loss']:.4f} "
                  f"(unigram {card['unigram_loss']:.4f}), {card['curve']['seconds']:.0f} s")


@whitebox_app.command("compare")
def compare(models: Annotated[str, typer.Option(help="Comma-separated models; the first is compared with each "
                                                "other one.")] = "zoo:crate-tiny,zoo:gpt2-tiny-relu",
            out_dir: Annotated[str | None, typer.Option("--out", callback=checked_out_dir,
                                                        help="Directory for result.json and "
                                                        "report.html.")] = None,
            corpus: Annotated[str | None, typer.Option(help=CORPUS_HELP + " With your text the label IoU is "
                                                       "skipped (its labels exist only for the synthetic "
                                                       "corpus).")] = None,
            sentences: Annotated[int, typer.Option(help="Sentences to score the neurons on (with --corpus: the "
                                                   "first N windows).", callback=at_least(10))] = 1500,
            units_per_layer: Annotated[int | None, typer.Option(help="Score a random sample of this many neurons "
                                                                "per layer (default: all).", callback=COUNT)] = None,
            heldout_samples: Annotated[int, typer.Option(help="Zoo held-out corpus documents for the LM "
                                                         "loss (with --corpus: the first N windows).",
                                                         callback=at_least(10))] = 4000,
            seed: Annotated[int, typer.Option(help="Corpus, sampling and bootstrap seed.", callback=SEED)] = 0,
            overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Held-out loss and neuron interpretability per layer (offline autointerp, bootstrap CIs) of each model.

    Zoo models missing from the cache are trained first (a few minutes each). Other models need --corpus.
    Example: lmscope whitebox compare --models zoo:crate-tiny,zoo:gpt2-tiny-relu --out cmp/
    On your text: lmscope whitebox compare --models crate/,gpt/ --corpus docs.txt --out cmp/
    """
    from lmscope.autointerp import RecordConfig
    from lmscope.fileio import check_writable
    from lmscope.whitebox.compare import CompareConfig, compare_models

    names = [m.strip() for m in models.split(",") if m.strip()]
    if out_dir is not None:
        for name in ("result.json", "report.html"):  # refuse before minutes of work, not after
            check_writable(Path(out_dir) / name, overwrite=overwrite)
    cfg = CompareConfig(n_sentences=sentences, units_per_layer=units_per_layer, corpus_seed=4242 + seed,
                        heldout_samples=heldout_samples, records=RecordConfig(seed=seed))
    with progress_bars(not as_json) as stage:
        result = compare_models(names, cfg, corpus=corpus, stage=stage)
    if out_dir is not None:
        from lmscope.report.whitebox_sections import comparison_page

        result.save(out_dir, overwrite=overwrite, html=comparison_page(result.to_dict()))
    if as_json:
        print_json({k: v for k, v in result.to_dict().items() if k != "units"})
        return
    first = names[0]
    if result.corpus.get("source") != "synthetic":
        c = result.corpus
        out.print(f"corpus {c['source']}: {c['n_documents']} documents -> {c['n_texts']} windows of <= "
                  f"{c['max_tokens']} tokens; neurons scored on {c['n_texts_scored']}, loss on {c['n_texts_loss']}",
                  soft_wrap=True)
    for metric, why in result.skipped.items():
        out.print(f"skipped: {metric} ({why})", soft_wrap=True)
    loss_name = "held-out loss" if result.corpus.get("source") == "synthetic" else "loss on the corpus"
    for name in names:
        s = result.per_model[name]["summary"]["all"]
        out.print(f"{name}: {loss_name} {result.per_model[name]['heldout_loss']:.4f}; top-and-random "
                  f"{_fmt(s['top_and_random'])}, random-only {_fmt(s['random_only'])}, detection "
                  f"{_fmt(s['detection'])}" + ("" if "best_iou" in result.skipped else
                                                f", best IoU {_fmt(s['best_iou'])}"), soft_wrap=True)
    for other, rows in result.relative.items():
        r = rows["all"]["top_and_random"]
        if r["value"] is not None:
            out.print(f"{first} vs {other}: top-and-random {r['value']:+.0%} [{r['lo']:+.0%}, {r['hi']:+.0%}]")
    out.print(f"{result.seconds:.1f} s" + (f"; wrote {out_dir}/report.html" if out_dir else ""))


def _fmt(s: dict[str, object]) -> str:
    if s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"
