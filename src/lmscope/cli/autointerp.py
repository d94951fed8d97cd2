"""`lmscope autointerp score`: explain and score the neurons of a store (or a dictionary's features), or of a
model run on the user's corpus (`--model` with `--corpus`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmscope.cli.common import (
    COUNT,
    NONNEG,
    AllowMismatchOpt,
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

autointerp_app = typer.Typer(help="Automated interpretability: explain, simulate, score (offline by default).",
                             no_args_is_help=True)
EXPLAINERS = ("offline", "openai", "hf")


def _labels(store: Any, labels: str, columns: str) -> dict[str, Any]:
    """Row labels aligned with the store: a synthetic-corpus JSONL (several kinds) or any token-label file."""
    from lmscope.autointerp.structural import corpus_row_labels, synthetic_row_labels
    from lmscope.data.labels import read_label_file
    from lmscope.data.samples import read_jsonl

    kinds = [c.strip() for c in columns.split(",") if c.strip()]
    path = Path(labels)
    if path.suffix == ".jsonl":
        try:
            samples = read_jsonl(path)
        except InputError:
            samples = None  # token-label JSONL, not a synthetic corpus
        if samples is not None:
            stored = store.sentences()
            if [list(s.words) for s in samples] != [list(s) for s in stored]:
                raise InputError(f"--labels {labels}: its sentences are not the store's; label the corpus that "
                                 "was extracted")
            return synthetic_row_labels(samples, kinds)
    from lmscope.neurons.dataset import check_alignment

    corpus = read_label_file(labels, kinds[0] if kinds else "upos",
                             corpus_path=store.manifest.get("corpus", {}).get("path"))
    check_alignment(store, corpus)
    return {kinds[0] if kinds else "label": corpus_row_labels(corpus, kinds[0] if kinds else "label")}


def _pair(explainer: str, llm_url: str | None, llm_model: str | None, llm_dtype: str | None = None,
          llm_batch_size: int = 8) -> tuple[Any, Any]:
    """The explainer/simulator pair a flag names: offline (None, None), an OpenAI-compatible endpoint, or a local
    HF model as the fast batched explainer and all-at-once simulator (`lmscope.autointerp.local`)."""
    from lmscope.autointerp import HFExplainer, HFSimulator, LLMExplainer, LLMSimulator, LocalLM, OpenAIClient

    if explainer not in EXPLAINERS:
        raise InputError(f"--explainer: expected one of {', '.join(EXPLAINERS)}, got {explainer!r}")
    if explainer != "hf" and (llm_dtype is not None or llm_batch_size != 8):
        flag = "--llm-dtype" if llm_dtype is not None else "--llm-batch-size"
        raise InputError(f"{flag}: applies with --explainer hf (a local model), not {explainer}")
    if explainer == "offline":
        if llm_url or llm_model:
            raise InputError(f"{'--llm-url' if llm_url else '--llm-model'}: applies with --explainer openai or hf; "
                             "the default explainer is offline")
        return None, None
    if explainer == "openai":
        if not llm_model:
            raise InputError("--explainer openai: pass --llm-model (the model to ask)")
        if not llm_url:
            raise InputError("--explainer openai: pass --llm-url (an OpenAI-compatible base URL, e.g. "
                             "http://localhost:8000/v1; the key is read from $OPENAI_API_KEY)")
        client = OpenAIClient(llm_url, llm_model)
        return LLMExplainer(client), LLMSimulator(client)
    if not llm_model:
        raise InputError("--explainer hf: pass --llm-model (the local model to run: an instruct model's directory "
                         "or HF id, or real:smollm2-135m)")
    if llm_url:
        raise InputError("--llm-url: applies with --explainer openai; --explainer hf runs --llm-model locally")
    lm = LocalLM(llm_model, dtype=llm_dtype or "bfloat16", batch_size=llm_batch_size)
    return HFExplainer(lm), HFSimulator(lm)


StoreArg = Annotated[str | None, typer.Argument(help="Activation store directory (from `lmscope extract`); or "
                                              "leave it out and give --model and --corpus.")]


@autointerp_app.command("score")
def score(store: StoreArg = None,
          out_dir: Annotated[str, typer.Option("--out", callback=checked_out_dir,
                                               help="Directory for result.json.")] = "",
          model: Annotated[str | None, typer.Option(help="Run this model on --corpus instead of reading a store "
                                                    "(records are documents, one activation per token).")] = None,
          corpus: Annotated[str | None, typer.Option(help=CORPUS_HELP)] = None,
          context_tokens: Annotated[int, typer.Option(help="With --model: tokens per record (documents are cut into "
                                                      "windows this long).", callback=at_least(2))] = 64,
          max_texts: Annotated[int | None, typer.Option(help="With --model: use only the first N records.",
                                                        callback=COUNT)] = None,
          exclude_first: Annotated[int | None, typer.Option(help="With --model: also leave out the first N text "
                                                            "tokens of every record (the BOS position always is); "
                                                            "default 0, or what --dict was trained with.",
                                                            callback=NONNEG)] = None,
          prepend_bos: Annotated[bool | None, typer.Option("--prepend-bos/--no-prepend-bos", help="With --model: "
                                                           "start every record with BOS (default: what the "
                                                           "tokenizer adds, or what --dict recorded).")] = None,
          points: Annotated[str | None, typer.Option(help="Comma-separated hook points (default: all of the store's; "
                                                     "required with --model unless --dict); with --model also a "
                                                     "dictionary's features, DIR.hook_sae_acts_post.")] = None,
          units_per_point: Annotated[int | None, typer.Option(help="Score a random sample of this many units per "
                                                              "point (default: all).", callback=COUNT)] = None,
          dictionary: Annotated[str | None, typer.Option("--dict", help="Score this dictionary's features (its "
                                                         "hook point must be in the store or the model).")] = None,
          labels: Annotated[str | None, typer.Option(help="Word labels for the IoU metric (store only): the "
                                                     "synthetic corpus JSONL, .conllu, token-label .jsonl or a "
                                                     "NeuroX label file.")] = None,
          column: Annotated[str, typer.Option(help="Label kinds: pos,task,topic (synthetic) or a CoNLL-U "
                                              "column.")] = "pos,task,topic",
          explainer: Annotated[str, typer.Option(help="offline, openai or hf.")] = "offline",
          llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (--explainer openai).")]
          = None,
          llm_model: Annotated[str | None, typer.Option(help="Model name (openai) or MODEL to run locally (hf: an "
                                                        "instruct model with a chat template, e.g. "
                                                        "real:smollm2-135m).")] = None,
          llm_dtype: Annotated[str | None, typer.Option(help="--explainer hf: bfloat16 (default, faster on CPU) or "
                                                        "float32.")] = None,
          llm_batch_size: Annotated[int, typer.Option(help="--explainer hf: units explained per batched "
                                                      "generation.", callback=COUNT)] = 8,
          seed: SeedOpt = 0,
          overwrite: Annotated[bool, typer.Option(help="Replace an existing result.json.")] = False,
          allow_mismatch: AllowMismatchOpt = False, as_json: JsonFlag = False) -> None:
    """Explain every unit from its top records and score the explanation on held-out records.

    From a store (records are sentences of words): lmscope autointerp score store/ --labels corpus.jsonl --out ai/
    On your text (records are documents of tokens; BOS left out):
    lmscope autointerp score --model real:smollm2-135m --corpus docs.txt --points blocks.5.mlp.hook_post
    --units-per-point 20 --out ai/
    """
    from lmscope.autointerp import RecordConfig
    from lmscope.fileio import check_writable

    if not out_dir:
        raise InputError("--out: expected a directory for result.json")
    check_writable(Path(out_dir) / "result.json", overwrite=overwrite)
    if (store is None) == (model is None):
        raise InputError("autointerp score: give a STORE (from `lmscope extract`) or --model MODEL with --corpus "
                         "FILE" + (", not both" if store is not None else ""))
    if store is not None:
        given = [f for f, v in (("--corpus", corpus), ("--max-texts", max_texts), ("--exclude-first", exclude_first),
                                ("--prepend-bos", prepend_bos)) if v is not None]
        if given:
            raise InputError(f"{given[0]}: applies with --model (a store's text and positions were fixed by "
                             "`lmscope extract`)")
    elif labels is not None:
        raise InputError("--labels: word labels need a store (its rows are words); with --model the rows are tokens")
    ex, sim = _pair(explainer, llm_url, llm_model, llm_dtype, llm_batch_size)
    chosen = [p.strip() for p in points.split(",") if p.strip()] if points else None
    d = None
    if dictionary is not None:
        from lmscope.dictionary import load_dictionary

        d = load_dictionary(dictionary)
    cfg = RecordConfig(seed=seed)
    with progress_bars(not as_json) as stage:
        if hasattr(ex, "lm"):  # load the local explainer first: a bad --llm-model fails before any scoring
            ex.lm.load(progress=stage)
            stage("loading the explainer", 1, 1)
        if store is not None:
            result = _score_store(store, chosen, units_per_point, d, dictionary, labels, column, cfg, ex, sim, stage,
                                  allow_mismatch)
        else:
            assert model is not None
            result = _score_model(model, corpus, chosen, units_per_point, d, dictionary, context_tokens, max_texts,
                                  exclude_first, prepend_bos, cfg, ex, sim, stage, allow_mismatch)
    path = result.save(out_dir, overwrite=overwrite)
    from lmscope.autointerp.scoring import BASELINE

    if as_json:
        print_json({k: v for k, v in result.to_dict().items() if k != "units"})
        return
    for point, s in result.summary.items():
        for name, prefix in ((result.explainer, ""), (BASELINE, f"{BASELINE}_")):
            parts = [f"{m} {s[prefix + m]['mean']:.3f} [{s[prefix + m]['lo']:.3f}, {s[prefix + m]['hi']:.3f}]"
                     for m in ("top_and_random", "random_only", "detection", "best_iou")
                     if prefix + m in s and s[prefix + m]["mean"] is not None]
            if prefix and (f"{prefix}top_and_random" not in s):
                continue
            label = f"{point} ({name})" if f"{BASELINE}_top_and_random" in s else point
            out.print(f"{label}: {'; '.join(parts)}", soft_wrap=True)
    positions = result.config["positions"]
    if positions["rows"] == "tokens":
        out.print(f"records: {positions['n_contexts']} contexts of {result.source}, {positions['n_rows']} tokens "
                  f"({positions['rule']})", soft_wrap=True)
    out.print(f"{len(result.units)} units scored; wrote {path}")


def _score_store(store: str, points: list[str] | None, units_per_point: int | None, d: Any, dictionary: str | None,
                 labels: str | None, column: str, cfg: Any, ex: Any, sim: Any, stage: Any,
                 allow_mismatch: bool = False) -> Any:
    from lmscope.activations import ActivationStore
    from lmscope.autointerp import score_store
    from lmscope.model.provenance import check_same_model

    st = ActivationStore(store)
    if d is not None:  # a dictionary read with a store: both must come from one model
        check_same_model(_dictionary_record(d), st.provenance, what=f"--dict {dictionary} with store {store}",
                         allow_mismatch=allow_mismatch)
    row_labels = _labels(st, labels, column) if labels else None
    return score_store(st, points=points, units_per_point=units_per_point, labels=row_labels, dictionary=d,
                       dictionary_path=dictionary, cfg=cfg, explainer=ex, simulator=sim,
                       progress=lambda p, i, n: stage(f"scoring {p}", i, n))


def _score_model(model: str, corpus: str | None, points: list[str] | None, units_per_point: int | None, d: Any,
                 dictionary: str | None, context_tokens: int, max_texts: int | None, exclude_first: int | None,
                 prepend_bos: bool | None, cfg: Any, ex: Any, sim: Any, stage: Any,
                 allow_mismatch: bool = False) -> Any:
    from lmscope import HookedModel
    from lmscope.autointerp import score_texts
    from lmscope.data.corpus import load_corpus

    load_corpus(corpus, model_name=model)  # a missing or bad --corpus is refused before the model loads
    if d is None and not points:
        raise InputError("--points: name the hook points to score with --model (e.g. blocks.3.mlp.hook_post), or "
                         "pass --dict")
    if prepend_bos is None and d is not None:
        prepend_bos = getattr(d.cfg, "prepend_bos", None)
    hooked = HookedModel.from_pretrained(model, prepend_bos=prepend_bos,
                                         progress=lambda i, n: stage(f"training {model}", i, n))
    if d is not None:
        from lmscope.dictionary.io import check_dictionary_model

        check_dictionary_model(d, hooked, what=f"--dict {dictionary}", allow_mismatch=allow_mismatch)
    if points:
        from lmscope.dictionary.attach import attach_dictionaries

        attach_dictionaries(hooked, points, allow_mismatch=allow_mismatch)  # DIR.hook_sae_acts_post points
    texts = load_corpus(corpus, model_name=model, tokenizer=hooked.tokenizer, max_tokens=context_tokens)
    chosen = texts.texts[:max_texts] if max_texts is not None else texts.texts
    return score_texts(hooked, chosen, points=points, dictionary=d, dictionary_path=dictionary,
                       units_per_point=units_per_point, exclude_first=exclude_first, source=texts.source,
                       model_name=model, cfg=cfg, explainer=ex, simulator=sim,
                       progress=lambda p, i, n: stage(p if p == "running the model" else f"scoring {p}", i, n))


def _dictionary_record(d: Any) -> dict[str, Any] | None:
    """The model a dictionary records (its provenance, or for older files just the id in cfg.json)."""
    record = getattr(d, "provenance", None)
    if record is None and getattr(d.cfg, "model_id", None):
        return {"model_id": d.cfg.model_id}
    return record
