"""`lmscope data synthetic`: write lmscope's synthetic corpus and its labels to files."""

from __future__ import annotations

from typing import Annotated

import typer

from lmscope.cli.common import COUNT, SEED, JsonFlag, checked_out_dir, out, print_json
from lmscope.data.export import DEFAULT_SAMPLES, DEFAULT_SEED, DEFAULT_SPLIT

data_app = typer.Typer(help="Corpora and labels: export lmscope's synthetic corpus.", no_args_is_help=True)


@data_app.command("synthetic")
def synthetic(out_dir: Annotated[str, typer.Option("--out", callback=checked_out_dir,
                                                   help="Directory for corpus.txt, labels.conllu and "
                                                   "samples.jsonl.")],
              samples: Annotated[int, typer.Option(help="Number of samples (texts).",
                                                   callback=COUNT)] = DEFAULT_SAMPLES,
              seed: Annotated[int, typer.Option(help="Generator seed.", callback=SEED)] = DEFAULT_SEED,
              split: Annotated[str, typer.Option(help="train (templates never query the held-out items) or "
                                                 "heldout.")] = DEFAULT_SPLIT,
              overwrite: Annotated[bool, typer.Option(help="Replace existing files.")] = False,
              as_json: JsonFlag = False) -> None:
    """Write the synthetic corpus: corpus.txt (one text per line, usable as --corpus), labels.conllu (UPOS per
    word, succession items and toxic words in MISC) and samples.jsonl (full records, usable as --labels).

    The defaults write exactly the texts of `--corpus synthetic`.
    Example: lmscope data synthetic --out synth/
    then: lmscope extract zoo:gpt2-tiny --corpus synth/corpus.txt --points mlp --out store/
    """
    from lmscope.data.export import export_synthetic

    paths = export_synthetic(out_dir, n_samples=samples, seed=seed, split=split, overwrite=overwrite)
    if as_json:
        print_json({"samples": samples, "seed": seed, "split": split, "files": {k: str(v) for k, v in paths.items()}})
        return
    out.print(f"{samples} synthetic samples (seed {seed}, {split}); wrote "
              + ", ".join(str(p) for p in paths.values()), soft_wrap=True)
