"""`lmscope heads succession | mod10 | edit | detect | wild`: attention-head analysis on any supported model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lmscope.cli.common import (
    COUNT,
    FRACTION,
    MAX_COUNT,
    NONNEG_FLOAT,
    RESIDUE,
    JsonFlag,
    ModelArg,
    at_least,
    checked_out_dir,
    err,
    out,
    print_json,
    progress_bars,
)
from lmscope.data.corpus import CORPUS_HELP
from lmscope.errors import InputError

heads_app = typer.Typer(help="Attention heads: successor heads, mod-10 features, vector arithmetic, detectors.",
                        no_args_is_help=True)
OutOpt = Annotated[str | None, typer.Option("--out", callback=checked_out_dir,
                                             help="Directory to write result.json into.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing result.json in --out.")]
def _mode(value: str) -> str:
    """--mode checked when the arguments are parsed, before the model loads."""
    from lmscope.heads.ov import MODES

    if value not in MODES:
        raise InputError(f"--mode: got {value!r}, expected one of {', '.join(MODES)}")
    return value


ModeOpt = Annotated[str, typer.Option(callback=_mode,
                                      help="Effective embeddings: auto (what reaches each head: raw embeddings "
                                           "for layer 0, MLP0's output after it), raw, mlp0 (the paper's, for "
                                           "every head), mlp0_no_ln or mlp0_with_attn.")]
def _head_format(value: str | None) -> str | None:
    """--head's form (LAYER.HEAD) checked when parsed; its range is checked against the model."""
    if value is not None:
        parse_head(value, MAX_COUNT, MAX_COUNT)
    return value


HeadOpt = Annotated[str | None, typer.Option("--head", callback=_head_format,
                                             help="The head as LAYER.HEAD (default: the best successor head).")]
FoldOpt = Annotated[bool, typer.Option("--fold-ln/--no-fold-ln", help="Read W_U through the final norm (its gain "
                                                                      "folded in, columns centred for LayerNorm), "
                                                                      "as TransformerLens does; --no-fold-ln reads "
                                                                      "the raw W_U.")]
FEW_TOKENS = 10
"""Heads-in-the-wild categories with fewer tokens are marked as resting on little data."""


def parse_head(text: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    """`"2.3"` -> (2, 3), checked against the model's shape."""
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdecimal() for p in parts):
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
            out.print(line, markup=False, highlight=False, soft_wrap=True)


def _load(model: str) -> Any:
    from lmscope import HookedModel

    return HookedModel.from_pretrained(model)


def _head(hooked: Any, head: str | None, mode: str, fold_ln: bool) -> tuple[int, int]:
    from lmscope.heads import succession_scores

    if head is not None:
        return parse_head(head, hooked.cfg.n_layers, hooked.cfg.n_heads)
    result = succession_scores(hooked, mode=mode, fold_ln=fold_ln)
    layer, h = result.best_head()
    score = float(result.scores[layer, h])
    if score < result.threshold:
        err.print(f"note: the best head, {layer}.{h}, scores only {score:.2f} (< {result.threshold}): this model may "
                  "have no successor head; the analysis below runs on it anyway (choose one with --head)",
                  markup=False, highlight=False, soft_wrap=True)
    return layer, h


def task_lines(result: Any, layer: int, head: int) -> list[str]:
    """One line per task: the head's score, pairs scored, items dropped (unknown tokens among them), and
    whether the task is too thin to be in the headline score."""
    lines = [f"per task: score of head {layer}.{head}, pairs scored, items dropped (of both variants, ' x' and "
             f"'x': several tokens or the unknown token); tasks with < {result.min_pairs} pairs are not in the score"]
    width = max(len(t) for t in [*result.tasks, *result.ood]) + 12
    rows = [(t, result.per_task.get(t), result.n_pairs[t], t) for t in result.tasks]
    rows += [(f"{t} (held out)", s, result.n_pairs.get(f"ood:{t}", 0), None) for t, s in result.ood.items()]
    for name, scores, pairs, task in rows:
        score = "  -  " if scores is None else f"{float(scores[layer, head]):.2f}"
        line = f"  {name:<{width}} {score}  {pairs:>4} pairs"
        if task is not None:
            unknown = result.unknown.get(task, 0)
            line += f"  {result.dropped[task]:>3}/{result.tried[task]} dropped" + \
                (f" ({unknown} unknown)" if unknown else "")
            if pairs < result.min_pairs:
                line += "  too few pairs: not in the score" if task not in result.headline_tasks else \
                    "  too few pairs (in the score only because no task has enough)"
        lines.append(line)
    return lines


@heads_app.command("succession")
def succession(model: ModelArg, out_dir: OutOpt = None, mode: ModeOpt = "auto",
               threshold: Annotated[float, typer.Option(help="Report heads scoring at least this.",
                                                        callback=FRACTION)] = 0.4,
               min_pairs: Annotated[int, typer.Option("--min-pairs", help="Tasks with fewer pairs than this are "
                                                      "shown but left out of the score (below 10, one pair moves a "
                                                      "task's score by more than 0.1).", callback=COUNT)] = 10,
               fold_ln: FoldOpt = True, overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Succession score of every head (share of ordinal pairs whose OV circuit outputs the successor).

    Each head is scored on the embedding that reaches it (--mode auto); the input baseline is the score of
    the identity map on that input: a head that does not beat its layer's baseline passes on succession that
    is already there (a copying head) rather than computing it. The score is the mean over tasks with at
    least --min-pairs pairs; items that are not one token (or are the tokenizer's unknown token) are dropped,
    and each task's pairs and drops are printed.

    Example: lmscope heads succession zoo:crate-tiny --out succ/
    """
    from lmscope.heads import succession_scores
    from lmscope.heads.succession import greater_than_bias

    hooked = _load(model)
    result = succession_scores(hooked, mode=mode, fold_ln=fold_ln, min_pairs=min_pairs)
    result.threshold = threshold
    layer, head = result.best_head()
    base = float(result.baseline[layer]) if result.baseline is not None else float("nan")
    n_head = len(result.headline_tasks)
    summary = [f"best successor head {layer}.{head}: score {float(result.scores[layer, head]):.3f}, the mean over "
               f"{n_head} task{'s' if n_head != 1 else ''} (input baseline of layer {layer}: {base:.3f})"]
    if result.headline_is_thin:
        summary.append(f"note: no task has {min_pairs} pairs with this tokenizer, so the score rests on thin tasks "
                       "and means little")
    summary += task_lines(result, layer, head)
    summary.append(f"heads >= {threshold}: " + (", ".join(f"{h['layer']}.{h['head']} ({h['score']:.2f})"
                                                          for h in result.top_heads()) or "none"))
    bias = greater_than_bias(hooked, layer, head, mode=mode, fold_ln=fold_ln)
    thin = [t for t in bias if t in result.thin_tasks]
    summary.append("greater-than bias of the best head: " + ", ".join(
        f"{t} {v:.2f}{'*' if t in thin else ''}" for t, v in bias.items()) + (" (* too few pairs)" if thin else ""))
    _finish(result, out_dir, overwrite, as_json, summary)


@heads_app.command("mod10")
def mod10(model: ModelArg, head: HeadOpt = None, out_dir: OutOpt = None, mode: ModeOpt = "auto",
          seeds: Annotated[int, typer.Option(help="SAE seeds to fit (the modal choice is reported).",
                                            callback=COUNT)] = 3,
          d_sae: Annotated[int, typer.Option("--d-sae", help="SAE features.", callback=COUNT)] = 256,
          l1: Annotated[float, typer.Option(help="SAE L1 coefficient.", callback=NONNEG_FLOAT)] = 3e-3,
          fold_ln: FoldOpt = True, overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Mod-10 features: an SAE on effective embeddings, one feature per residue class, a probe beside it.

    Needs every residue 0-9 on at least 2 single-token numbers whose successor is one token too: a tokenizer
    that splits numbers into digits (only 0-9 are one token) is refused in one line.

    Example: lmscope heads mod10 zoo:crate-tiny --head 0.1 --out mod10/
    """
    from lmscope.heads.mod10 import check_residues, mod10_features

    hooked = _load(model)
    check_residues(hooked)  # before any scoring or SAE fit
    layer, h = _head(hooked, head, mode, fold_ln)
    result = mod10_features(hooked, layer, h, seeds=tuple(range(seeds)), d_sae=d_sae, l1_coefficient=l1, mode=mode,
                            fold_ln=fold_ln)
    summary = [f"mod-10 features through head {layer}.{h} (mean coverage {result.mean_coverage:.2f}):"]
    summary += [f"  residue {f['residue']}: feature {f['feature']} (seed {f['seed']}), coverage {f['coverage']:.2f}, "
                f"agreement {f['agreement']:.2f}" for f in result.features]
    summary.append(f"probe: accuracy {result.probe['accuracy']:.2f}, mean cosine {result.probe['mean_cosine']:.2f}")
    _finish(result, out_dir, overwrite, as_json, summary)


@heads_app.command("edit")
def edit(model: ModelArg, head: HeadOpt = None,
         from_residue: Annotated[int | None, typer.Option("--from", help="Residue (0-9) to remove.",
                                                          callback=RESIDUE)] = None,
         to_residue: Annotated[int | None, typer.Option("--to", help="Residue (0-9) to add.", callback=RESIDUE)] = None,
         out_dir: OutOpt = None, mode: ModeOpt = "auto",
         seeds: Annotated[int, typer.Option(help="SAE seeds for the mod-10 features.", callback=COUNT)] = 3,
         fold_ln: FoldOpt = True, overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Vector arithmetic: move items from one residue mod 10 to another and check the head's successor.

    Needs the mod-10 features, so the same tokenizers are refused as by `heads mod10`.

    Example: lmscope heads edit zoo:crate-tiny --head 0.1 --from 3 --to 7
    """
    from lmscope.heads.arithmetic import residue_pairs, vector_arithmetic
    from lmscope.heads.mod10 import check_residues, mod10_features

    residue_pairs(from_residue, to_residue)  # refuse bad residues before any work
    hooked = _load(model)
    check_residues(hooked)  # before any scoring or SAE fit
    layer, h = _head(hooked, head, mode, fold_ln)
    features = mod10_features(hooked, layer, h, seeds=tuple(range(seeds)), mode=mode, fold_ln=fold_ln)
    result = vector_arithmetic(hooked, features, from_residue=from_residue, to_residue=to_residue, mode=mode,
                               fold_ln=fold_ln)
    summary = [f"vector arithmetic through head {layer}.{h}, k = {result.k}: overall {result.overall:.2f}"]
    summary += [f"  {t}: {r:.2f} of {result.n_edits[t]} edits" for t, r in result.rates.items()]
    _finish(result, out_dir, overwrite, as_json, summary)


@heads_app.command("detect")
def detect(model: ModelArg, out_dir: OutOpt = None,
           seq_len: Annotated[int, typer.Option(help="Length of the repeated random block.",
                                                callback=at_least(2))] = 20,
           fold_ln: FoldOpt = True, overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Previous-token, duplicate-token, induction and copying scores of every head.

    Example: lmscope heads detect zoo:gpt2-tiny --out detect/
    """
    from lmscope.heads import detect_heads
    from lmscope.heads.detectors import DETECTORS

    hooked = _load(model)
    with progress_bars(not as_json) as stage:
        result = detect_heads(hooked, seq_len=seq_len, fold_ln=fold_ln, progress=stage)
    summary = []
    for kind in DETECTORS:
        best = result.top_heads(kind, 1)[0]
        summary.append(f"{kind}: best head {best['layer']}.{best['head']} ({best['score']:.2f})")
    _finish(result, out_dir, overwrite, as_json, summary)


@heads_app.command("wild")
def wild(model: ModelArg, out_dir: OutOpt = None,
         corpus: Annotated[str | None, typer.Option(help=CORPUS_HELP)] = None,
         samples: Annotated[int | None, typer.Option(help="Run at most this many texts (windows) of the corpus "
                                                          "(default: all of a file; 300 synthetic texts).",
                                                          callback=COUNT)] = None,
         max_tokens: Annotated[int, typer.Option("--max-tokens", help="Cut documents into windows of at most this "
                                                  "many tokens (the cost grows with tokens x heads x "
                                                  "vocabulary).", callback=at_least(2))] = 128,
         batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per batch (each batch pays a fixed "
                                                  "per-layer cost, and holds its logits in memory).",
                                                  callback=COUNT)] = 16,
         chunk_mb: Annotated[int, typer.Option(help="Most megabytes of next-token log-probabilities a batch holds "
                                               "(fewer texts per batch where they would pass it; the results are "
                                               "the same).", callback=COUNT)] = 128,
         overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Heads in the wild: per token, the head whose direct effect matters most, and what kind of token it is.

    Prints each category's top head (the head that matters most most often for that category's tokens),
    then the heads that matter most often overall. A real model needs --corpus (your text); the synthetic
    corpus is the default for zoo: models only.

    Example: lmscope heads wild zoo:crate-tiny --samples 500
    """
    from lmscope.data.corpus import load_corpus
    from lmscope.heads.wild import heads_in_the_wild

    if out_dir is not None:
        from pathlib import Path

        from lmscope.fileio import check_writable

        check_writable(Path(out_dir) / "result.json", overwrite=overwrite)  # refused before any work
    load_corpus(corpus, model_name=model, synthetic_texts=1)  # a missing or bad --corpus is refused before loading
    hooked = _load(model)
    source = load_corpus(corpus, model_name=model, tokenizer=hooked.tokenizer,
                         max_tokens=min(max_tokens, hooked.cfg.n_ctx), synthetic_texts=samples or 300, seed=5)
    texts = source.texts[:samples] if samples is not None else source.texts
    with progress_bars(not as_json) as stage:
        result = heads_in_the_wild(hooked, texts, batch_size=batch_size, max_bytes=chunk_mb * 2**20, progress=stage,
                                   corpus=source.to_dict() | {"n_used": len(texts)})
    used = "" if len(texts) == len(source.texts) else f" (the first {len(texts)} of {len(source.texts)} texts)"
    summary = [f"{result.n_tokens} tokens from {source.describe()}{used}",
               "top head per category (the head whose direct effect matters most, most often, for its tokens):"]
    for top in result.category_tops():
        if top["layer"] is None:
            summary.append(f"  {top['category']:<13} no token of this category")
            continue
        few = f"  (few tokens: < {FEW_TOKENS})" if top["n_tokens"] < FEW_TOKENS else ""
        summary.append(f"  {top['category']:<13} head {top['layer']}.{top['head']}: {top['tokens']} of "
                       f"{top['n_tokens']} tokens ({top['share']:.0%}){few}")
    totals = result.counts.sum(-1).flatten()
    summary.append("heads that matter most often:")
    for flat in totals.argsort(descending=True)[:3].tolist():
        s = result.head_summary(*divmod(int(flat), hooked.cfg.n_heads))
        summary.append(f"  {s['layer']}.{s['head']}: {s['tokens']} tokens, " +
                       ", ".join(f"{k} {v:.2f}" for k, v in s["shares"].items()))
    _finish(result, out_dir, overwrite, as_json, summary)
