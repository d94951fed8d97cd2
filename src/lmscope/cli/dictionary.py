"""`lmscope dict train | eval | features`: SAEs and transcoders on a model's activations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmscope.cli.common import JsonFlag, ModelArg, out, print_json, progress_bars
from lmscope.errors import InputError

dict_app = typer.Typer(help="Sparse dictionaries: train, evaluate and read SAEs and transcoders.",
                       no_args_is_help=True)
DirArg = Annotated[str, typer.Argument(help="A dictionary directory (cfg.json + sae_weights.safetensors).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model (default: the one it was trained on).")]


def _model_for(directory: str, model: str | None) -> tuple[Any, Any]:
    from lmscope import HookedModel
    from lmscope.dictionary import load_dictionary

    dictionary = load_dictionary(directory)
    name = model or dictionary.cfg.model_id
    if not name:
        raise InputError(f"{directory}: cfg.json names no model; pass --model")
    return HookedModel.from_pretrained(name), dictionary


@dict_app.command("train")
def train(model: ModelArg,
          out_dir: Annotated[str, typer.Option("--out", help="Directory for the dictionary (SAELens layout).")],
          kind: Annotated[str, typer.Option(help="sae or transcoder.")] = "transcoder",
          layer: Annotated[int, typer.Option(help="Block whose MLP (transcoder) or hook point (SAE) to use.")] = 1,
          hook: Annotated[str | None, typer.Option(help="SAE hook point (default blocks.L.hook_resid_post).")]
          = None,
          d_sae: Annotated[int, typer.Option("--d-sae", help="Number of features.")] = 1024,
          activation: Annotated[str, typer.Option(help="relu (with L1) or topk.")] = "relu",
          l1: Annotated[float, typer.Option(help="L1 coefficient (relu).")] = 1.0,
          k: Annotated[int | None, typer.Option(help="Active features per token (topk).")] = None,
          tokens: Annotated[int, typer.Option(help="Training tokens, streamed from the model.")] = 200_000,
          batch_size: Annotated[int, typer.Option(help="Rows per step.")] = 1024,
          seed: int = 0,
          checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (0: none).")] = 0,
          resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = False,
          overwrite: Annotated[bool, typer.Option(help="Replace an existing dictionary in --out.")] = False,
          as_json: JsonFlag = False) -> None:
    """Train an SAE or a transcoder on activations streamed from the model over the synthetic corpus.

    Example: lmscope dict train zoo:gpt2-tiny --kind transcoder --layer 2 --d-sae 1024 --l1 1.0 --out tc2/
    """
    from lmscope import HookedModel
    from lmscope.dictionary.recipes import train_dictionary

    target = Path(out_dir)
    if (target / "cfg.json").exists() and not overwrite:
        raise InputError(f"{target / 'cfg.json'}: already exists; pass --overwrite to replace it")
    hooked = HookedModel.from_pretrained(model)
    with progress_bars(not as_json) as stage:
        est = train_dictionary(hooked, kind=kind, layer=layer, hook=hook, d_sae=d_sae, activation=activation,
                               l1_coefficient=l1, k=k, tokens=tokens, batch_size=batch_size, seed=seed,
                               out_dir=target if checkpoint_every else None, checkpoint_every=checkpoint_every,
                               resume=resume, progress=lambda i, n, rec: stage("training", i, n))
    path = est.save(target, overwrite=overwrite)
    last = est.history_[-1] if est.history_ else {}
    summary = {"path": str(path), "kind": kind, "hook_name": est.dictionary_.cfg.hook_name,
               "hook_name_out": est.dictionary_.cfg.hook_name_out, "steps": est.n_steps_,
               "final_loss": last.get("loss"), "final_l0": last.get("l0")}
    if as_json:
        print_json(summary)
    else:
        out.print(f"{path}: {kind} on {summary['hook_name']} -> {summary['hook_name_out']}, {est.n_steps_} steps, "
                  f"train loss {summary['final_loss']:.4g}, L0 {summary['final_l0']:.1f}")


@dict_app.command("eval")
def evaluate_cmd(directory: DirArg, model: ModelOpt = None,
                 texts: Annotated[int, typer.Option(help="Held-out corpus texts to evaluate on.")] = 300,
                 as_json: JsonFlag = False) -> None:
    """L0, FVU, dead/dense features on held-out tokens, and LM loss with the dictionary spliced in.

    Example: lmscope dict eval tc2/
    """
    from lmscope.dictionary.recipes import corpus_texts
    from lmscope.dictionary.report import dictionary_metrics

    hooked, dictionary = _model_for(directory, model)
    result = dictionary_metrics(hooked, dictionary, corpus_texts(texts, seed=999))
    if as_json:
        print_json(result)
        return
    m, s = result["metrics"], result["spliced"]
    out.print(f"L0 {m['l0']:.1f}  FVU {m['fvu']:.4f}  dead {m['dead_fraction']:.3f}  dense {m['dense_fraction']:.3f}\n"
              f"LM loss clean {s['clean_loss']:.4f}  spliced {s['spliced_loss']:.4f}  mean-ablated "
              f"{s['ablated_loss']:.4f}  loss recovered {s['loss_recovered']:.3f}  KL {s['kl_div']:.4f}")


@dict_app.command("features")
def features_cmd(directory: DirArg, model: ModelOpt = None,
                 features: Annotated[str | None, typer.Option(help="Comma-separated feature indices "
                                                              "(default: the most frequent).")] = None,
                 top_examples: Annotated[int, typer.Option("--top-examples", help="Contexts per feature.")] = 5,
                 texts: Annotated[int, typer.Option(help="Corpus texts to search.")] = 300,
                 as_json: JsonFlag = False) -> None:
    """Each feature's top-activating contexts and its top input tokens through the embedding.

    Example: lmscope dict features tc2/ --features 3,17 --top-examples 5
    """
    from lmscope.dictionary.features import feature_reports
    from lmscope.dictionary.recipes import corpus_texts

    try:
        chosen = [int(f) for f in features.split(",")] if features else None
    except ValueError:
        raise InputError(f"--features: expected comma-separated integers, got {features!r}") from None
    hooked, dictionary = _model_for(directory, model)
    reports = feature_reports(hooked, dictionary, corpus_texts(texts, seed=999), features=chosen, k=top_examples)
    if as_json:
        print_json([r.to_dict() for r in reports])
        return
    for r in reports:
        tokens = " ".join(repr(t) for t, _ in r.de_embedding[:6])
        out.print(f"[bold]feature {r.feature}[/] (fires on {r.density:.1%} of tokens); de-embedding: {tokens}",
                  soft_wrap=True)
        for value, text in r.top_examples:
            out.print(f"  {value:7.3f}  {text}", soft_wrap=True, markup=False)
