"""`lmscope heads succession | mod10 | edit | detect | wild`: attention-head analysis on any supported model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lmscope.cli.common import JsonFlag, ModelArg, err, out, print_json
from lmscope.errors import InputError

heads_app = typer.Typer(help="Attention heads: successor heads, mod-10 features, vector arithmetic, detectors.",
                        no_args_is_help=True)
OutOpt = Annotated[str | None, typer.Option("--out", help="Directory to write result.json into.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing result.json in --out.")]
ModeOpt = Annotated[str, typer.Option(help="Effective embeddings: auto (what reaches each head: raw embeddings "
                                           "for layer 0, MLP0's output after it), raw, mlp0 (the paper's, for "
                                           "every head), mlp0_no_ln or mlp0_with_attn.")]
HeadOpt = Annotated[str | None, typer.Option("--head", help="The head as LAYER.HEAD (default: the best "
                                                             "successor head).")]


def parse_head(text: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    """`"2.3"` -> (2, 3), checked against the model's shape."""
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise InputError(f"--head: got {text!r}, expected LAYER.HEAD such as 0.3")
    layer, head = int(parts[0]), int(parts[1])
    if layer >= n_layers or head >= n_heads:
        raise InputError(f"--head: got {text}; the model has {n_layers} layers of {n_heads} heads")
    return layer, head


def _finish(result: Any, out_dir: str | None, overwrite: bool, as_json: bool, summary: list[str]) -> None:
    if out_dir is not None:
        path = result.save(out_dir, overwrite=overwrite)
        summary.append(f"wrote {path}")
    if as_json:
        print_json(result.to_dict())
    else:
        for line in summary:
            out.print(line, markup=False, highlight=False)


def _load(model: str) -> Any:
    from lmscope import HookedModel

    return HookedModel.from_pretrained(model)


def _head(hooked: Any, head: str | None, mode: str) -> tuple[int, int]:
    from lmscope.heads import succession_scores

    if head is not None:
        return parse_head(head, hooked.cfg.n_layers, hooked.cfg.n_heads)
    result = succession_scores(hooked, mode=mode)
    layer, h = result.best_head()
    score = float(result.scores[layer, h])
    if score < result.threshold:
        err.print(f"note: the best head, {layer}.{h}, scores only {score:.2f} (< {result.threshold}): this model may "
                  "have no successor head; the analysis below runs on it anyway (choose one with --head)",
                  markup=False, highlight=False, soft_wrap=True)
    return layer, h


@heads_app.command("succession")
def succession(model: ModelArg, out_dir: OutOpt = None, mode: ModeOpt = "auto",
               threshold: Annotated[float, typer.Option(help="Report heads scoring at least this.")] = 0.4,
               overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Succession score of every head (share of ordinal pairs whose OV circuit outputs the successor).

    Each head is scored on the embedding that reaches it (--mode auto); the input baseline is the score of
    the identity map on that input: a head that does not beat its layer's baseline passes on succession that
    is already there (a copying head) rather than computing it.

    Example: lmscope heads succession zoo:crate-tiny --out succ/
    """
    from lmscope.heads import succession_scores
    from lmscope.heads.succession import greater_than_bias

    hooked = _load(model)
    result = succession_scores(hooked, mode=mode)
    result.threshold = threshold
    layer, head = result.best_head()
    base = float(result.baseline[layer]) if result.baseline is not None else float("nan")
    summary = [f"best successor head {layer}.{head}: score {float(result.scores[layer, head]):.3f} (input baseline "
               f"of layer {layer}: {base:.3f})",
               "per task: " + ", ".join(f"{t} {float(s[layer, head]):.2f}" for t, s in result.per_task.items()),
               f"heads >= {threshold}: " + (", ".join(f"{h['layer']}.{h['head']} ({h['score']:.2f})"
                                                     for h in result.top_heads()) or "none")]
    bias = greater_than_bias(hooked, layer, head, mode=mode)
    summary.append("greater-than bias of the best head: " + ", ".join(f"{t} {v:.2f}" for t, v in bias.items()))
    _finish(result, out_dir, overwrite, as_json, summary)


@heads_app.command("mod10")
def mod10(model: ModelArg, head: HeadOpt = None, out_dir: OutOpt = None, mode: ModeOpt = "auto",
          seeds: Annotated[int, typer.Option(help="SAE seeds to fit (the modal choice is reported).")] = 3,
          d_sae: Annotated[int, typer.Option("--d-sae", help="SAE features.")] = 256,
          l1: Annotated[float, typer.Option(help="SAE L1 coefficient.")] = 3e-3,
          overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Mod-10 features: an SAE on effective embeddings, one feature per residue class, a probe beside it.

    Example: lmscope heads mod10 zoo:crate-tiny --head 0.1 --out mod10/
    """
    from lmscope.heads.mod10 import mod10_features

    if seeds < 1:
        raise InputError(f"--seeds: got {seeds}, expected at least 1")
    hooked = _load(model)
    layer, h = _head(hooked, head, mode)
    result = mod10_features(hooked, layer, h, seeds=tuple(range(seeds)), d_sae=d_sae, l1_coefficient=l1, mode=mode)
    summary = [f"mod-10 features through head {layer}.{h} (mean coverage {result.mean_coverage:.2f}):"]
    summary += [f"  residue {f['residue']}: feature {f['feature']} (seed {f['seed']}), coverage {f['coverage']:.2f}, "
                f"agreement {f['agreement']:.2f}" for f in result.features]
    summary.append(f"probe: accuracy {result.probe['accuracy']:.2f}, mean cosine {result.probe['mean_cosine']:.2f}")
    _finish(result, out_dir, overwrite, as_json, summary)


@heads_app.command("edit")
def edit(model: ModelArg, head: HeadOpt = None,
         from_residue: Annotated[int | None, typer.Option("--from", help="Residue (0-9) to remove.")] = None,
         to_residue: Annotated[int | None, typer.Option("--to", help="Residue (0-9) to add.")] = None,
         out_dir: OutOpt = None, mode: ModeOpt = "auto",
         seeds: Annotated[int, typer.Option(help="SAE seeds for the mod-10 features.")] = 3,
         overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Vector arithmetic: move items from one residue mod 10 to another and check the head's successor.

    Example: lmscope heads edit zoo:crate-tiny --head 0.1 --from 3 --to 7
    """
    from lmscope.heads.arithmetic import residue_pairs, vector_arithmetic
    from lmscope.heads.mod10 import mod10_features

    residue_pairs(from_residue, to_residue)  # refuse bad residues before any work
    hooked = _load(model)
    layer, h = _head(hooked, head, mode)
    features = mod10_features(hooked, layer, h, seeds=tuple(range(max(seeds, 1))), mode=mode)
    result = vector_arithmetic(hooked, features, from_residue=from_residue, to_residue=to_residue, mode=mode)
    summary = [f"vector arithmetic through head {layer}.{h}, k = {result.k}: overall {result.overall:.2f}"]
    summary += [f"  {t}: {r:.2f} of {result.n_edits[t]} edits" for t, r in result.rates.items()]
    _finish(result, out_dir, overwrite, as_json, summary)


@heads_app.command("detect")
def detect(model: ModelArg, out_dir: OutOpt = None,
           seq_len: Annotated[int, typer.Option(help="Length of the repeated random block.")] = 20,
           overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Previous-token, duplicate-token, induction and copying scores of every head.

    Example: lmscope heads detect zoo:gpt2-tiny --out detect/
    """
    from lmscope.heads import detect_heads
    from lmscope.heads.detectors import DETECTORS

    result = detect_heads(_load(model), seq_len=seq_len)
    summary = []
    for kind in DETECTORS:
        best = result.top_heads(kind, 1)[0]
        summary.append(f"{kind}: best head {best['layer']}.{best['head']} ({best['score']:.2f})")
    _finish(result, out_dir, overwrite, as_json, summary)


@heads_app.command("wild")
def wild(model: ModelArg, out_dir: OutOpt = None,
         samples: Annotated[int, typer.Option(help="Held-out synthetic-corpus lines to run.")] = 300,
         corpus: Annotated[str | None, typer.Option(help="A text file, one sample per line, instead.")] = None,
         overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Heads in the wild: per token, the head whose direct effect matters most, and what kind of token it is.

    Example: lmscope heads wild zoo:crate-tiny --samples 500
    """
    from lmscope.heads.wild import heads_in_the_wild

    if corpus is not None:
        from lmscope.activations.corpus import read_sentences

        texts = [" ".join(words) for words in read_sentences(corpus)]
    else:
        from lmscope.data.synthetic import generate_corpus

        texts = [s.text for s in generate_corpus(samples, seed=5, split="heldout")]
    hooked = _load(model)
    result = heads_in_the_wild(hooked, texts)
    totals = result.counts.sum(-1).flatten()
    top = totals.argsort(descending=True)[:3].tolist()
    summary = [f"{result.n_tokens} tokens; heads that matter most often:"]
    for flat in top:
        s = result.head_summary(*divmod(int(flat), hooked.cfg.n_heads))
        summary.append(f"  {s['layer']}.{s['head']}: {s['tokens']} tokens, " +
                       ", ".join(f"{k} {v:.2f}" for k, v in s["shares"].items()))
    _finish(result, out_dir, overwrite, as_json, summary)
