"""`lmscope dict train | eval | features`: SAEs and transcoders on a model's activations, over the user's text."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from lmscope.cli.common import (
    COUNT,
    NONNEG,
    NONNEG_FLOAT,
    AllowMismatchOpt,
    JsonFlag,
    ModelArg,
    SeedOpt,
    checked_out_dir,
    err,
    out,
    print_json,
    progress_bars,
)
from lmscope.data.corpus import CORPUS_HELP
from lmscope.errors import InputError, Interrupted
from lmscope.fileio import check_output_dir

dict_app = typer.Typer(help="Sparse dictionaries: train, evaluate and read SAEs and transcoders.",
                       no_args_is_help=True)
DirArg = Annotated[str, typer.Argument(help="A dictionary directory (cfg.json + sae_weights.safetensors).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model (default: the one it was trained on).")]
CorpusOpt = Annotated[str | None, typer.Option(help=CORPUS_HELP)]
HeldOutCorpusOpt = Annotated[str | None, typer.Option(help=CORPUS_HELP + " Use held-out text, not the training "
                                                      "file (a note says when it is the same file).")]
ExcludeFirstOpt = Annotated[int | None, typer.Option(
    "--exclude-first", callback=NONNEG, help="Also leave out the first N text tokens of every text (the BOS "
    "position always is): real LMs use the first position as an attention sink. Default: what the dictionary was "
    "trained with.")]
TextsOpt = Annotated[int, typer.Option(callback=COUNT,
                                       help="Use at most this many texts of the corpus (its first ones).")]


def _check_k(k: int | None, d_sae: int) -> None:
    """`--k` at most `--d-sae`, before anything loads (each number alone is checked when parsed)."""
    if k is not None and k > d_sae:
        raise InputError(f"--k: expected 1..{d_sae} (--d-sae) active features, got {k}")


def _plan(target: Path, tokens: int, batch_size: int, every: int | None, overwrite: bool) -> Any:
    """The run's `RunConfig` (checkpoints, resume) from `--checkpoint-every` and `--overwrite`."""
    from lmscope.dictionary.train import plan_checkpoints

    return plan_checkpoints(target, math.ceil(tokens / batch_size), every, overwrite=overwrite)


def _remove_checkpoints(target: Path) -> None:
    from lmscope.dictionary.train import remove_checkpoints

    remove_checkpoints(target)


@contextmanager
def _resumable(target: Path, run: Any) -> Iterator[None]:
    """Ctrl-C during training: say where the newest checkpoint is and how to continue (exit code 130)."""
    from lmscope.dictionary.train import latest_checkpoint

    try:
        yield
    except KeyboardInterrupt:
        last = latest_checkpoint(target) if run.checkpoint_every else None
        raise Interrupted(f"rerun the same command to resume from {last}" if last is not None
                          else "no checkpoint was written yet (rerun to start again)") from None


def _load(directory: str, model: str | None, corpus: str | None, texts: int, stage: Any,
          features: list[int] | None = None, allow_mismatch: bool = False) -> tuple[Any, Any, Any]:
    """(model, dictionary, corpus): the corpus and `features` are checked (one line asking for --corpus for a
    real model) before the model loads; the model tokenizes as the dictionary was trained (its recorded
    prepend_bos)."""
    from lmscope import HookedModel
    from lmscope.data.corpus import load_corpus
    from lmscope.dictionary import load_dictionary
    from lmscope.dictionary.io import check_dictionary_model
    from lmscope.dictionary.recipes import model_corpus

    dictionary = load_dictionary(directory)
    bad = [f for f in features or [] if not 0 <= f < dictionary.cfg.d_sae]
    if bad:
        raise InputError(f"--features: {bad[0]} is out of range (the dictionary has {dictionary.cfg.d_sae} features)")
    name = model or dictionary.cfg.model_id
    if not name:
        raise InputError(f"{directory}: cfg.json names no model; pass --model")
    load_corpus(corpus, model_name=name, synthetic_texts=1)  # refuses a missing corpus/file before the model loads
    stage("loading model", 0, 1)
    hooked = HookedModel.from_pretrained(name)
    stage("loading model", 1, 1)
    check_dictionary_model(dictionary, hooked, what=f"dictionary {directory}", allow_mismatch=allow_mismatch)
    recorded = dictionary.cfg.prepend_bos
    if recorded is not None and recorded != hooked.prepend_bos:
        if recorded and getattr(hooked.tokenizer, "bos_token_id", None) is None:
            err.print(f"note: {directory} was trained with a BOS, but {name}'s tokenizer has none; running without")
        else:
            hooked.prepend_bos = recorded  # tokenize as in training
    text = model_corpus(corpus, hooked, synthetic_texts=texts)
    _note_training_overlap(dictionary, text)
    return hooked, dictionary, text


def _note_training_overlap(dictionary: Any, corpus: Any) -> None:
    """Say on stderr when the evaluation text is the text the dictionary was trained on."""
    from lmscope.dictionary.recipes import corpus_record

    trained = dictionary.cfg.corpus or {}
    if not trained or corpus.is_synthetic:
        return
    mine = corpus_record(corpus)
    if trained.get("sha256") and trained.get("sha256") == mine.get("sha256"):
        err.print(f"note: {corpus.source} is the file this dictionary was trained on, so these figures are on "
                  "training text, not held-out text; pass a held-out file with --corpus", soft_wrap=True)


def _texts(corpus: Any, n: int) -> tuple[list[str], str]:
    """The first `n` texts of `corpus` and a line saying which text was used."""
    chosen = corpus.texts[:n]
    part = "" if len(chosen) == len(corpus.texts) else f", first {len(chosen)} of {len(corpus.texts)} texts"
    return chosen, corpus.describe() + part


@dict_app.command("train")
def train(model: ModelArg,
          out_dir: Annotated[str, typer.Option("--out", help="Directory for the dictionary (SAELens layout).")],
          corpus: CorpusOpt = None,
          kind: Annotated[str, typer.Option(help="sae or transcoder.")] = "transcoder",
          layer: Annotated[int, typer.Option(
              callback=NONNEG, help="Block whose MLP (transcoder) or hook point (SAE) to use.")] = 1,
          layers: Annotated[str | None, typer.Option(
              help="Train a stack: 'all' or layers such as 0,3,5 or 2-5, every one from the same single model "
              "forward per batch; --out gets one subdirectory per layer (what `lmscope circuit --transcoders` "
              "reads) and result.json with a per-layer table.")] = None,
          hook: Annotated[str | None, typer.Option(help="SAE hook point (default blocks.L.hook_resid_post; with "
                                                   "--layers a template such as blocks.{layer}.hook_resid_mid).")]
          = None,
          d_sae: Annotated[int, typer.Option("--d-sae", callback=COUNT, help="Number of features.")] = 1024,
          activation: Annotated[str, typer.Option(help="relu (with L1) or topk.")] = "relu",
          l1: Annotated[float, typer.Option(callback=NONNEG_FLOAT, help="L1 coefficient (relu).")] = 1.0,
          k: Annotated[int | None, typer.Option(callback=COUNT, help="Active features per token (topk).")] = None,
          tokens: Annotated[int, typer.Option(
              callback=COUNT, help="Training tokens, streamed from the model (the corpus is cycled through as often "
              "as needed).")] = 200_000,
          batch_size: Annotated[int, typer.Option(callback=COUNT, help="Rows per step.")] = 1024,
          reuse: Annotated[int, typer.Option(
              callback=COUNT, help="Serve each row computed from the model this many times (shuffled): --tokens "
              "rows then cost --tokens/N tokens of forward passes, for real LMs on CPU where the model is the "
              "cost.")] = 1,
          exclude_first: Annotated[int, typer.Option(
              "--exclude-first", callback=NONNEG, help="Also leave out the first N text tokens of every text (the "
              "BOS position always is): real LMs use the first position as an attention sink.")] = 0,
          prepend_bos: Annotated[bool | None, typer.Option(
              "--prepend-bos/--no-prepend-bos", help="Start every text with BOS (default: what the tokenizer "
              "adds). The BOS position is never a training row.")] = None,
          seed: SeedOpt = 0,
          model_dtype: Annotated[str, typer.Option(
              "--model-dtype", help="float32 or bfloat16: the dtype the model runs in while it streams "
              "activations (bfloat16 is about 2x faster on CPUs with bf16 matmul; the dictionary trains in float32 "
              "either way, and the per-layer table is measured with the model in float32).")] = "float32",
          buffer_tokens: Annotated[int | None, typer.Option(
              "--buffer-tokens", callback=COUNT, help="With --layers: rows per shuffled fill (memory: rows x sum of "
              "the hooks' widths x 4 bytes; default max(8 x batch, 8192), lowered to fit 2 GiB).")] = None,
          eval_texts: Annotated[int, typer.Option(
              "--eval-texts", callback=NONNEG, help="With --layers: texts for the per-layer table, held out of "
              "training when the corpus has more than twice as many (0: no table).")] = 16,
          spliced: Annotated[bool, typer.Option(
              "--spliced/--no-spliced", help="With --layers: LM loss with each layer's dictionary spliced in "
              "(3 forwards per eval batch per layer).")] = True,
          checkpoint_every: Annotated[int | None, typer.Option(
              callback=NONNEG, help="Steps between checkpoints in --out/checkpoints/ (default: about ten a run, "
              "removed once it finishes; 0: none). A run that was stopped resumes from the newest one when rerun "
              "with the same command, to the same weights an uninterrupted run gives.")] = None,
          overwrite: Annotated[bool, typer.Option(help="Replace an existing dictionary in --out (and start over, "
                                                  "discarding its checkpoints).")] = False,
          as_json: JsonFlag = False) -> None:
    """Train an SAE or a transcoder on activations streamed from the model over your corpus.

    Example: lmscope dict train ./smollm2-135m --layer 15 --corpus train.txt --d-sae 4096 --out tc15/
    (zoo models default to the synthetic corpus: lmscope dict train zoo:gpt2-tiny --layer 2 --out tc2/)
    """
    from lmscope.data.corpus import load_corpus
    from lmscope.dictionary.positions import PositionRule, first_position_note
    from lmscope.dictionary.recipes import dictionary_hooks, model_corpus, train_dictionary

    target = check_output_dir(out_dir)
    dtype = _model_dtype(model_dtype)
    if layers is not None:
        _train_stack(model, target, corpus=corpus, kind=kind, layers=layers, hook=hook, d_sae=d_sae,
                     activation=activation, l1=l1, k=k, tokens=tokens, batch_size=batch_size, reuse=reuse,
                     exclude_first=exclude_first, prepend_bos=prepend_bos, seed=seed, buffer_tokens=buffer_tokens,
                     dtype=dtype,
                     eval_texts=eval_texts, spliced=spliced, checkpoint_every=checkpoint_every,
                     overwrite=overwrite, as_json=as_json)
        return
    if (target / "cfg.json").exists() and not overwrite:
        raise InputError(f"{target / 'cfg.json'}: already exists; pass --overwrite to replace it")
    _check_k(k, d_sae)
    run = _plan(target, tokens, batch_size, checkpoint_every, overwrite)
    rule_check = PositionRule(False, exclude_first)  # refuses a negative --exclude-first before any work
    load_corpus(corpus, model_name=model, synthetic_texts=1)  # one line asking for --corpus, before the model loads
    with progress_bars(True) as stage:
        stage("loading model", 0, 1)
        hooked, record = _load_streaming(model, prepend_bos, dtype)
        stage("loading model", 1, 1)
        text = model_corpus(corpus, hooked, synthetic_texts=max(200, tokens // 10), seed=seed + 100)
        note = first_position_note(hooked, text.texts[:16], dictionary_hooks(hooked, kind, layer, hook)[1],
                                   PositionRule.for_model(hooked, rule_check.exclude_first))
        if note:
            err.print(f"note: {note}", soft_wrap=True, markup=False, highlight=False)
        with _resumable(target, run):
            est = train_dictionary(hooked, kind=kind, layer=layer, hook=hook, d_sae=d_sae, activation=activation,
                                   l1_coefficient=l1, k=k, tokens=tokens, batch_size=batch_size, seed=seed,
                                   corpus=text, exclude_first=rule_check.exclude_first, reuse=reuse,
                                   run=run, provenance=record, progress=stage)
    path = est.save(target, overwrite=overwrite)
    if run.remove_after:
        _remove_checkpoints(target)
    cfg = est.dictionary_.cfg
    last = est.history_[-1] if est.history_ else {}
    record = cfg.corpus or {}
    rule = PositionRule(bool(cfg.prepend_bos), cfg.exclude_first)
    rows = est.n_steps_ * batch_size
    passes = rows / reuse / record["tokens"] if record.get("tokens") else math.nan
    summary = {"path": str(path), "kind": kind, "hook_name": cfg.hook_name, "hook_name_out": cfg.hook_name_out,
               "steps": est.n_steps_, "rows": rows, "final_loss": last.get("loss"), "final_l0": last.get("l0"),
               "corpus": record, "positions": rule.to_dict(),
               "reuse": reuse, "passes_over_corpus": None if math.isnan(passes) else passes}
    if as_json:
        print_json(summary)
        return
    out.print(f"{path}: {kind} on {cfg.hook_name} -> {cfg.hook_name_out}, {est.n_steps_} steps, "
              f"train loss {summary['final_loss']:.4g}, L0 {summary['final_l0']:.1f}", soft_wrap=True)
    each = "" if reuse == 1 else f", each served {reuse} times"
    over = "" if math.isnan(passes) else (f"; {rows:,} rows{each} = {passes:.2f} passes over its "
                                         f"{record['tokens']:,} tokens" + (
                                             " (a small corpus: features may fit its texts)"
                                             if passes * reuse > 4 else ""))
    out.print(f"trained on {text.describe()}{over}; {rule.describe()}", soft_wrap=True, markup=False)


def _train_stack(model: str, target: Path, *, corpus: str | None, kind: str, layers: str, hook: str | None,
                 d_sae: int, activation: str, l1: float, k: int | None, tokens: int, batch_size: int, reuse: int,
                 exclude_first: int, prepend_bos: bool | None, seed: int, buffer_tokens: int | None,
                 dtype: Any, eval_texts: int, spliced: bool, checkpoint_every: int | None, overwrite: bool,
                 as_json: bool) -> None:
    """`dict train --layers`: a stack from one forward per batch (`lmscope.dictionary.multi`)."""
    from dataclasses import replace

    from lmscope import HookedModel
    from lmscope.data.corpus import load_corpus
    from lmscope.dictionary.multi import parse_layers, save_stack, split_eval_texts, stack_table, train_stack
    from lmscope.dictionary.positions import PositionRule
    from lmscope.dictionary.recipes import model_corpus
    from lmscope.fileio import check_writable
    from lmscope.report.dictionary_sections import write_stack_report

    check_writable(target / "result.json", overwrite=overwrite)
    check_writable(target / "report.html", overwrite=overwrite)
    _check_k(k, d_sae)
    plan = _plan(target, tokens, batch_size, checkpoint_every, overwrite)
    if activation == "topk" and k is None:
        raise InputError("--k: a TopK dictionary needs k")
    PositionRule(False, exclude_first)
    load_corpus(corpus, model_name=model, synthetic_texts=1)
    known = _config_layers(model)
    parse_layers(layers, known)  # the syntax, and the bound where config.json gives the layer count: before loading
    with progress_bars(True) as stage:
        if known is not None:  # else the bound is checked on the loaded model, before any progress line
            stage("loading model", 0, 1)
        hooked, record = _load_streaming(model, prepend_bos, dtype)
        chosen = parse_layers(layers, hooked.cfg.n_layers)
        stage("loading model", 1, 1)
        # weights (encoder + decoder) per layer, and two kept checkpoints with Adam's two moments each
        check_output_dir(target, need_bytes=len(chosen) * 2 * hooked.cfg.d_model * d_sae * 4 * (
            1 + (6 if plan.checkpoint_every else 0)))
        text = model_corpus(corpus, hooked, synthetic_texts=max(200, tokens // 10), seed=seed + 100)
        train_texts, held, held_out = split_eval_texts(text.texts, eval_texts)
        with _resumable(target, plan):
            run = train_stack(hooked, layers=chosen, kind=kind, hook=hook, d_sae=d_sae, activation=activation,
                              l1_coefficient=l1, k=k, tokens=tokens, batch_size=batch_size,
                              corpus=replace(text, texts=train_texts),
                              exclude_first=exclude_first, reuse=reuse, seed=seed, buffer_tokens=buffer_tokens,
                              run=plan, provenance=record, progress=stage)
        if str(dtype) != "torch.float32":  # the table with the float32 model whatever the streaming dtype
            hooked = HookedModel.from_pretrained(model, prepend_bos=prepend_bos)
        table = stack_table(hooked, run, held, spliced=spliced, progress=stage)
    meta = {"model": hooked.name, "eval": {"n_texts": len(held), "held_out": held_out, "spliced": spliced}}
    path = save_stack(run, table, target, overwrite=overwrite, meta=meta)
    write_stack_report(path, overwrite=overwrite)
    if plan.remove_after:
        _remove_checkpoints(target)
    if as_json:
        import json

        print_json(json.loads((path / "result.json").read_text()))
        return
    _print_stack(path, run, table, held_out)


def _config_layers(model: str) -> int | None:
    """The model's layer count read from its config.json without loading weights (a zoo model on disk or a saved
    HF directory); None where that would need a download or a conversion (checked after loading then)."""
    import json

    if model.startswith("real:"):
        return None
    if model.startswith("zoo:"):
        from lmscope.model.zoo import locate

        try:
            found = locate(model[len("zoo:"):])
        except InputError:
            return None  # an unknown name: refused, in one line, by the load itself
        path = None if found is None else Path(found) / "config.json"
    else:
        path = Path(model).expanduser() / "config.json"
    try:
        cfg = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}
    for key in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        if isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool) and cfg[key] > 0:
            return int(cfg[key])
    return None


def _load_streaming(model: str, prepend_bos: bool | None, dtype: Any) -> tuple[Any, dict[str, Any]]:
    """The model to stream activations from, in `dtype`, and the provenance record of its float32 weights
    (what the dictionaries are later used with)."""
    from lmscope import HookedModel
    from lmscope.model.provenance import provenance_record

    hooked = HookedModel.from_pretrained(model, prepend_bos=prepend_bos)
    record = provenance_record(hooked)
    hooked.hf.to(dtype)
    return hooked, record


def _model_dtype(name: str) -> Any:
    """`--model-dtype` -> a torch dtype (float32 or bfloat16), checked before the model loads."""
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise InputError(f"--model-dtype: expected float32 or bfloat16, got {name!r}")
    return dtypes[name]


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _print_stack(path: Path, run: Any, table: list[dict[str, Any]], held_out: bool) -> None:
    from lmscope.dictionary.multi import timing

    t = timing(run)
    out.print(f"{path}: {len(run.hooks)} {run.settings['kind']}s, {run.steps} steps of {run.settings['batch_size']} "
              f"rows each, from one forward per batch ({t['wall_s']:.1f} s: model {t['forward_s']:.1f} s, "
              f"dictionaries {t['train_s']:.1f} s; {t['tokens_per_s']:,.0f} tokens/s, "
              f"{t['layer_tokens_per_s']:,.0f} layer-tokens/s)", soft_wrap=True, markup=False)
    out.print(f"{'layer':>5}  {'L0':>8}  {'FVU':>7}  {'dead':>6}  {'dead(train)':>11}  {'recovered':>9}  hook",
              markup=False)
    for r in table:
        out.print(f"{r['layer']:>5}  {_fmt(r.get('l0'), '8.1f')}  {_fmt(r.get('fvu'), '7.4f')}  "
                  f"{_fmt(r.get('dead_fraction'), '6.3f')}  {_fmt(r['dead_fraction_train'], '11.3f')}  "
                  f"{_fmt(r.get('loss_recovered'), '9.3f')}  {r['hook_name']}", markup=False,
                  soft_wrap=True)
    n = table[0].get("n_rows") if table else None
    if n is not None:
        out.print(f"table on {n:,} {'held-out' if held_out else 'training'} tokens; curves in result.json",
                  soft_wrap=True, markup=False)


@dict_app.command("eval")
def evaluate_cmd(directory: DirArg, model: ModelOpt = None, corpus: HeldOutCorpusOpt = None,
                 texts: TextsOpt = 300, exclude_first: ExcludeFirstOpt = None,
                 out_dir: Annotated[str | None, typer.Option("--out", callback=checked_out_dir,
                                                             help="Directory to write result.json into.")] = None,
                 overwrite: Annotated[bool, typer.Option(help="Replace an existing result.json in --out.")] = False,
                 allow_mismatch: AllowMismatchOpt = False, as_json: JsonFlag = False) -> None:
    """L0, FVU, dead/dense features on held-out tokens, and LM loss with the dictionary spliced in.

    Example: lmscope dict eval tc15/ --corpus heldout.txt
    """
    from lmscope.dictionary.positions import PositionRule
    from lmscope.dictionary.recipes import corpus_record
    from lmscope.dictionary.report import dictionary_metrics
    from lmscope.fileio import check_writable
    from lmscope.results import RESULT_NAME, result_payload, write_result

    if out_dir is not None:
        check_writable(Path(out_dir) / RESULT_NAME, overwrite=overwrite)
    with progress_bars(True) as stage:
        hooked, dictionary, text = _load(directory, model, corpus, texts, stage, allow_mismatch=allow_mismatch)
        chosen, used = _texts(text, texts)
        result = dictionary_metrics(hooked, dictionary, chosen, exclude_first=exclude_first, progress=stage)
    result.update(model=hooked.name, dictionary=str(directory),
                  corpus={**corpus_record(text), "n_texts_used": len(chosen)}, trained_on=dictionary.cfg.corpus)
    result = result_payload(result)  # kind and version first: what --json prints is what result.json holds
    if out_dir is not None:
        write_result(out_dir, result, overwrite=overwrite)
    if as_json:
        print_json(result)
        return
    m, s = result["metrics"], result["spliced"]
    recovered = (f"{s['loss_recovered']:.3f}" if s["loss_recovered"] is not None
                 else s["loss_recovered_note"] or "undefined")
    out.print(f"L0 {m['l0']:.1f}  FVU {m['fvu']:.4f}  dead {m['dead_fraction']:.3f}  dense {m['dense_fraction']:.3f}\n"
              f"LM loss clean {s['clean_loss']:.4f}  spliced {s['spliced_loss']:.4f}  mean-ablated "
              f"{s['ablated_loss']:.4f}  KL {s['kl_div']:.4f}\nloss recovered {recovered}", soft_wrap=True,
              markup=False)
    p = result["positions"]
    out.print(f"on {used}: {m['n_rows']:,} tokens ({s['n_tokens']:,} scored predictions); "
              f"{PositionRule(p['prepend_bos'], p['exclude_first']).describe()}", soft_wrap=True, markup=False)


@dict_app.command("features")
def features_cmd(directory: DirArg, model: ModelOpt = None,
                 features: Annotated[str | None, typer.Option(help="Comma-separated feature indices "
                                                              "(default: the most frequent).")] = None,
                 top_examples: Annotated[int, typer.Option("--top-examples", callback=COUNT,
                                                           help="Contexts per feature.")] = 5,
                 corpus: HeldOutCorpusOpt = None, texts: TextsOpt = 300, exclude_first: ExcludeFirstOpt = None,
                 allow_mismatch: AllowMismatchOpt = False, as_json: JsonFlag = False) -> None:
    """Each feature's top-activating contexts and its top input tokens through the embedding.

    Example: lmscope dict features tc15/ --corpus heldout.txt --features 3,17 --top-examples 5
    """
    from lmscope.dictionary.features import feature_reports

    try:
        chosen = [int(f) for f in features.split(",")] if features else None
    except ValueError:
        raise InputError(f"--features: expected comma-separated integers, got {features!r}") from None
    with progress_bars(True) as stage:
        hooked, dictionary, text = _load(directory, model, corpus, texts, stage, chosen, allow_mismatch)
        some, used = _texts(text, texts)
        reports = feature_reports(hooked, dictionary, some, features=chosen, k=top_examples,
                                  exclude_first=exclude_first, progress=stage)
    if as_json:
        print_json([r.to_dict() for r in reports])
        return
    for r in reports:
        tokens = " ".join(repr(t) for t, _ in r.de_embedding[:6])
        out.print(f"[bold]feature {r.feature}[/] (fires on {r.density:.1%} of tokens); de-embedding: {tokens}",
                  soft_wrap=True)
        for value, example in r.top_examples:
            out.print(f"  {value:7.3f}  {example}", soft_wrap=True, markup=False)
    out.print(f"on {used}", soft_wrap=True, markup=False)
