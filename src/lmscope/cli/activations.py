"""`lmscope extract`: hook-point activations of a corpus into a sharded, resumable store."""

from __future__ import annotations

from typing import Annotated

import typer

from lmscope.cli.common import (
    COUNT,
    AllowMismatchOpt,
    JsonFlag,
    ModelArg,
    checked_out_dir,
    one_of,
    out,
    print_json,
    progress_bars,
)
from lmscope.errors import InputError


def _aggregations() -> tuple[str, ...]:
    from lmscope.activations.align import AGGREGATIONS

    return AGGREGATIONS


def _dtypes() -> list[str]:
    from lmscope.activations.extract import DTYPES

    return list(DTYPES)



def extract(
    model: ModelArg,
    corpus: Annotated[str, typer.Option(help="Sentences: plain text (one per line), .conllu or .jsonl.")],
    points: Annotated[str, typer.Option(help="Comma-separated hook names, e.g. "
                                        "blocks.0.mlp.hook_post,blocks.1.mlp.hook_post; 'mlp' = every layer's "
                                        "mlp.hook_post; a dictionary's features: DIR.hook_sae_acts_post "
                                        "(the dictionary is loaded and attached).")],
    out_dir: Annotated[str, typer.Option("--out", callback=checked_out_dir,
                                         help="Store directory (created; an interrupted run resumes).")],
    aggregate: Annotated[str, typer.Option(help="Subword to word: first, last or mean.",
                                           callback=one_of(_aggregations))] = "last",
    dtype: Annotated[str, typer.Option(help="Stored dtype: float32, float16 or bfloat16.",
                                       callback=one_of(_dtypes))] = "float32",
    batch_tokens: Annotated[int, typer.Option(callback=COUNT, help="Padded tokens per forward batch.")] = 4096,
    shard_sentences: Annotated[int, typer.Option(callback=COUNT, help="Sentences per shard file.")] = 2048,
    prepend_bos: Annotated[bool | None, typer.Option("--prepend-bos/--no-prepend-bos", help="Start every sentence "
                           "with BOS (default: the model's own setting; recorded in the manifest).")] = None,
    allow_mismatch: AllowMismatchOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Extract activations for every word of a corpus (word-aligned, sharded safetensors + manifest.json).

    Run it again after an interruption: finished shards are kept and the rest is computed. Under
    `torchrun --nproc_per_node=N -m lmscope extract ...` each rank extracts its share of the shards.

    Example: lmscope extract zoo:gpt2-tiny --corpus sents.txt --points mlp --out store/
    """
    from lmscope import HookedModel
    from lmscope.activations import ExtractConfig, read_sentences
    from lmscope.activations import extract as run_extract
    from lmscope.dictionary.attach import attach_dictionaries

    names = [p.strip() for p in points.split(",") if p.strip()]
    if not names:
        raise InputError(f"--points: expected comma-separated hook names, got {points!r}")
    sentences = read_sentences(corpus)
    hooked = HookedModel.from_pretrained(model, prepend_bos=prepend_bos)
    if names == ["mlp"]:
        names = [f"blocks.{layer}.mlp.hook_post" for layer in range(hooked.cfg.n_layers)]
    attach_dictionaries(hooked, names, allow_mismatch=allow_mismatch)  # DIR.hook_sae_acts_post points
    cfg = ExtractConfig(tuple(names), aggregate, dtype, batch_tokens, shard_sentences)
    with progress_bars(not as_json) as stage:
        store = run_extract(hooked, sentences, out_dir, cfg, model_id=model, corpus_path=corpus,
                            progress=lambda i, n: stage("shards", i, n))
    summary = {"store": str(store.path), "n_sentences": store.n_sentences, "n_rows": store.n_rows,
               "points": store.points, "shards": len(store.manifest["shards"])}
    if as_json:
        print_json(summary)
    else:
        out.print(f"{store.path}: {summary['n_rows']:,} words of {summary['n_sentences']:,} sentences, "
                  f"{len(names)} points, {summary['shards']} shards")
