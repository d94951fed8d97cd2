"""Table-driven checks that each library refusal is reached: the call raises one `InputError` line naming the
argument (or file) at fault and what was expected.

Each case is `(id, call, words)`: `call(ctx)` must raise `InputError` whose message matches `words` (a regex)
and has no newline. `ctx` gives a tiny hooked model (with the synthetic tokenizer) and a tmp directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from refusals import refused
from tiny_models import tiny_hooked_with_tokenizer


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_hooked_with_tokenizer(300)


@pytest.fixture
def ctx(model: Any, tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(model=model, tmp=tmp_path)


def _dictionary(**cfg: Any) -> Any:
    from lmscope.dictionary import DictConfig, Dictionary

    base = {"kind": "sae", "d_in": 32, "d_sae": 8, "hook_name": "blocks.0.hook_resid_post"} | cfg
    return Dictionary(DictConfig(**base))


def _transcoder(layer: int = 0, d_in: int = 32, d_out: int = 32, **cfg: Any) -> Any:
    return _dictionary(kind="transcoder", d_in=d_in, d_out=d_out, hook_name=f"blocks.{layer}.ln2.hook_normalized",
                       hook_name_out=f"blocks.{layer}.hook_mlp_out", **cfg)


def _no_tokenizer(m: Any) -> Any:
    from lmscope import HookedModel

    return HookedModel(m.hf, None)


# ---------------------------------------------------------------- dictionary/

def _buffer(m: Any, texts: list[str], hooks: list[str]) -> Any:
    from lmscope.dictionary.buffer import ActivationBuffer

    return ActivationBuffer(m, texts, hooks)


def _stack_stream(m: Any, texts: list[str], **kw: Any) -> Any:
    from lmscope.dictionary.multi import StackStream

    args = {"batch_size": 4, "buffer_tokens": 64} | kw
    return StackStream(m, texts, ["blocks.0.hook_resid_post"], **args)


def _sae_fit(X: Any, Y: Any = None, **kw: Any) -> Any:
    from lmscope.dictionary.estimators import SAE

    return SAE(8, n_steps=1, **kw).fit(X, Y)


def _transcoder_fit(X: Any, Y: Any = None) -> Any:
    from lmscope.dictionary.estimators import Transcoder

    return Transcoder(8, n_steps=1).fit(X, Y)


def _parse_layers(spec: Any, n: int | None) -> Any:
    from lmscope.dictionary.multi import parse_layers

    return parse_layers(spec, n)


DICTIONARY = [
    ("buffer-no-texts", lambda c: _buffer(c.model, [], ["blocks.0.hook_resid_post"]), r"^texts: .*at least one text"),
    ("buffer-no-hooks", lambda c: _buffer(c.model, ["a b"], []), r"^hook_names: expected at least one hook"),
    ("estimator-X-1d", lambda c: _sae_fit(np.zeros(5, dtype=np.float32)), r"^X: expected a \[n, d\] tensor"),
    ("transcoder-no-Y", lambda c: _transcoder_fit(torch.zeros(4, 3)), r"^Y: a Transcoder needs targets Y"),
    ("transcoder-Y-rows", lambda c: _transcoder_fit(torch.zeros(4, 3), torch.zeros(5, 3)),
     r"^Y: 5 rows, X has 4"),
    ("dictconfig-exclude-first", lambda c: _dictionary(exclude_first=-1), r"^exclude_first: expected a non-negative"),
    ("parse-layers-open-descending", lambda c: _parse_layers("3-1", None), r"^layers: expected ascending ranges"),
    ("parse-layers-open-negative", lambda c: _parse_layers([-1], None), r"^layers: expected layers >= 0"),
    ("parse-layers-out-of-range", lambda c: _parse_layers("0,7", 2), r"^layers: expected layers in 0\.\.1"),
    ("stack-no-texts", lambda c: _stack_stream(c.model, []), r"^texts: stack training needs at least one text"),
    ("stack-batch-world", lambda c: _stack_stream(c.model, ["a b c"], batch_size=3, world=2),
     r"^batch_size: 3 is not divisible by the 2 torchrun"),
    ("stack-reuse", lambda c: _stack_stream(c.model, ["a b c"], reuse=0), r"^reuse: expected a positive number"),
    ("stack-no-kept-token", lambda c: _stack_stream(c.model, ["a"], exclude_first=50),
     r"^texts: no token to train on"),
    ("transcoder-with-hook", lambda c: __import__("lmscope.dictionary.recipes", fromlist=["x"]).dictionary_hooks(
        c.model, "transcoder", 0, "blocks.0.hook_resid_post"), r"^hook: a transcoder always reads ln2"),
    ("plan-checkpoints-every", lambda c: __import__("lmscope.dictionary.train", fromlist=["x"]).plan_checkpoints(
        c.tmp, 10, -1, overwrite=False), r"^every: expected 0 \(none\) or a positive number"),
    ("checkpoint-unreadable", lambda c: (c.tmp.joinpath("x.pt").write_text("junk"), __import__(
        "lmscope.dictionary.train", fromlist=["x"]).read_checkpoint(c.tmp / "x.pt")), r"x\.pt: unreadable checkpoint"),
    ("de-embedding-width", lambda c: __import__("lmscope.dictionary.features", fromlist=["x"]).de_embedding(
        c.model, _dictionary(d_in=16), 0), r"^dictionary: d_in 16 is not the model's d_model 32"),
    ("feature-reports-range", lambda c: __import__("lmscope.dictionary.features", fromlist=["x"]).feature_reports(
        c.model, _dictionary(), ["a b"], features=[99]), r"^features: 99 is out of range \(the dictionary has 8"),
    ("feature-reports-no-token", lambda c: __import__("lmscope.dictionary.features", fromlist=["x"]).feature_reports(
        c.model, _dictionary(exclude_first=40), ["a"]), r"^texts: no token to read features on"),
    ("spliced-no-token", lambda c: __import__("lmscope.dictionary.splice", fromlist=["x"]).spliced_metrics(
        c.model, _dictionary(exclude_first=40), ["a"]), r"^texts: no token to score"),
]


# ---------------------------------------------------------------- model/

def _attach(m: Any, name: Any, d: Any) -> Any:
    return m.attach_dictionary(name, d)


def _run_hooks(m: Any, hooks: Any, **kw: Any) -> Any:
    return m.run_with_hooks("a b", hooks, **kw)


MODEL = [
    ("hooks-not-pairs", lambda c: _run_hooks(c.model, [("blocks.0.hook_resid_post",)]),
     r"^hooks: expected \(name, fn\) pairs"),
    ("stop-at-layer", lambda c: _run_hooks(c.model, [], stop_at_layer=9), r"^stop_at_layer: expected an int in 0\.\.2"),
    ("attach-blank-name", lambda c: _attach(c.model, " x", _dictionary()), r"^name: expected a non-empty dictionary"),
    ("n-features-unknown", lambda c: __import__("lmscope.model.dictionaries", fromlist=["x"]).n_features(object()),
     r"^dictionary: object says neither cfg\.d_sae nor W_dec"),
    ("strings-without-tokenizer", lambda c: _no_tokenizer(c.model).run_with_hooks("a b"),
     r"^inputs: strings need a tokenizer"),
    ("compute-means-model", lambda c: __import__("lmscope.model.interventions", fromlist=["x"]).compute_means(
        object(), "a", []), r"^model: expected a HookedModel"),
    ("compute-means-pattern", lambda c: __import__("lmscope.model.interventions", fromlist=["x"]).compute_means(
        c.model, ["a b c"], ["blocks.0.attn.hook_pattern"]),
     r"blocks\.0\.attn\.hook_pattern: mean ablation of attention"),
    ("zero-ablation-no-units", lambda c: __import__("lmscope.model.interventions", fromlist=["x"]).ZeroAblation([]),
     r"^units: expected at least one unit"),
    ("patch-uncached", lambda c: __import__("lmscope.model.interventions", fromlist=["x"]).Patch(
        ["blocks.0.hook_resid_post:1"], {}), r"^source_cache: hook point 'blocks\.0\.hook_resid_post' was not cached"),
    ("gguf-no-file", lambda c: __import__("lmscope.model.gguf", fromlist=["x"]).ensure_converted(c.tmp / "m.gguf"),
     r"m\.gguf'?: no such file"),
    ("gguf-not-gguf", lambda c: (c.tmp.joinpath("m.gguf").write_bytes(b"NOPE" * 8), __import__(
        "lmscope.model.gguf", fromlist=["x"]).ensure_converted(c.tmp / "m.gguf")), r"not a GGUF file"),
    ("resolve-gguf-dir", lambda c: (c.tmp.joinpath("d.gguf").mkdir(), __import__(
        "lmscope.model.loading", fromlist=["x"]).resolve(str(c.tmp / "d.gguf"))), r"is a directory; a GGUF model"),
    ("load-hf-bad-folder", lambda c: (c.tmp.joinpath("config.json").write_text("{}"), __import__(
        "lmscope.model.loading", fromlist=["x"]).load_hf(str(c.tmp))), r"could not load it"),
]


def _patch_mismatch(m: Any) -> Any:
    from lmscope.model.interventions import Patch

    _, cache = m.run_with_cache("a b c d", ["blocks.0.hook_resid_post"])
    return m.run_with_hooks("a b", Patch(["blocks.0.hook_resid_post:0"], cache).hooks())


# ---------------------------------------------------------------- causal/

def _causal(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lmscope.causal.{name}")


CAUSAL = [
    ("balance-x-1d", lambda c: _causal("balance").entropy_balance(torch.zeros(4), torch.zeros(1)),
     r"^confounder features: expected \[n, q\]"),
    ("as-components-empty", lambda c: _causal("components").as_components([]),
     r"^components: expected at least one component"),
    ("standard-components-neurons", lambda c: _causal("components").standard_components(2, 4, "neurons"),
     r"^components: 'neurons' needs the neuron units"),
    ("component-empty-group", lambda c: _causal("components").Component.of([]),
     r"^component: expected at least one unit"),
    ("topics-too-few-texts", lambda c: _causal("confounders").topics_nmf(["a b"], 3),
     r"^texts: 1 texts cannot form 3 topics"),
    ("prepare-not-tensor", lambda c: _causal("engine").prepare(torch.nn.Linear(2, 2), "text"),
     r"^inputs: expected a tensor for Linear, got str"),
    ("word-ids-no-tokenizer", lambda c: _causal("scorers").word_token_ids(_no_tokenizer(c.model), ["a"]),
     r"^model: word lists need a tokenizer"),
    ("word-ids-empty-word", lambda c: _causal("scorers").word_token_ids(c.model, [" "]),
     r"^word list: empty word"),
]


# ---------------------------------------------------------------- circuits/

def _circ(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lmscope.circuits.{name}")


def _write(c: Any, name: str, text: str) -> Path:
    p = c.tmp / name
    p.write_text(text)
    return p


CIRCUITS = [
    ("graph-threshold", lambda c: _circ("graph").build_graph(None, [], threshold=-1),
     r"^threshold: expected a non-negative fraction"),
    ("graph-from-dict", lambda c: _circ("graph").CircuitGraph.from_dict({}), r"^graph: not a circuit graph"),
    ("heldout-unreadable", lambda c: _circ("heldout").read_cases(c.tmp / "none.txt", c.model, "#1"),
     r"none\.txt: cannot read it"),
    ("heldout-bad-json", lambda c: _circ("heldout").read_cases(_write(c, "h.jsonl", "{oops\n"), c.model, "#1"),
     r"h\.jsonl line 1: not JSON"),
    ("heldout-bad-target", lambda c: _circ("heldout").read_cases(_write(c, "h.txt", "a b\tlogit:#99999\n"),
                                                                        c.model, "#1"),
     r"h\.txt line 1: target: token id 99999 is outside the vocabulary"),
    ("heldout-empty", lambda c: _circ("heldout").read_cases(_write(c, "h.txt", "\n\n"), c.model, "#1"),
     r"h\.txt: holds no prompts"),
    ("builtin-n", lambda c: _circ("heldout").builtin_cases(
        c.model, "a", _circ("targets").parse_target("logit:#1", c.model), "days", 0),
     r"^n: expected a positive number of prompts"),
    ("builtin-no-tokenizer", lambda c: _circ("heldout").builtin_cases(
        _no_tokenizer(c.model), "a", _circ("targets").parse_target("logit:#1", c.model), "days", 2),
     r"^model: built-in held-out tasks need the model's tokenizer"),
    ("builtin-greater-than-prompt", lambda c: _circ("heldout").builtin_cases(
        c.model, "no year here", _circ("targets").parse_target("greater-than:32", c.model), "greater-than", 2),
     r"^prompt: greater-than: expected a year such as 1732"),
    ("connections-width", lambda c: _circ("invariant").connections(_transcoder(d_out=16), _transcoder(1)),
     r"^transcoders: the upstream one writes 16 dims, the downstream reads 32"),
    ("logit-scores-width", lambda c: _circ("invariant").logit_scores(c.model, _transcoder(d_out=16), 0),
     r"^dictionary: it writes 16 dims, the model's d_model is 32"),
    ("logit-scores-feature", lambda c: _circ("invariant").logit_scores(c.model, _transcoder(), 8),
     r"^feature: 8 is outside 0\.\.7"),
    ("target-token-id", lambda c: _circ("targets").parse_target("logit:#99999", c.model),
     r"^target: token id 99999 is outside the vocabulary"),
    ("target-feature-layer", lambda c: _circ("targets").parse_target("feature:5:1", c.model),
     r"^target: layer 5 is outside 0\.\.1"),
    ("trace-transcoder-hooks", lambda c: _circ("trace").CircuitTrace(c.model, {0: _transcoder(1)}, "a b"),
     r"^transcoders: layer 0 needs a transcoder blocks\.0\.ln2\.hook_normalized -> blocks\.0\.hook_mlp_out"),
    ("trace-two-prompts", lambda c: _circ("trace").CircuitTrace(c.model, {0: _transcoder()}, ["a b", "c d"]),
     r"^prompt: a circuit is traced for one prompt at a time"),
    ("trace-feature-probe", lambda c: _circ("trace").CircuitTrace(c.model, {0: _transcoder()}, "a b").feature_probe(
        1, 0, 0), r"^feature target: no transcoder for layer 1"),
]


# ---------------------------------------------------------------- heads/

def _heads(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lmscope.heads.{name}")


def _head_scores() -> Any:
    z = torch.zeros(2, 4)
    return _heads("detectors").HeadScores(z, z, z, z)


HEADS = [
    ("arithmetic-ks", lambda c: _heads("arithmetic").vector_arithmetic(
        c.model, SimpleNamespace(settings={}), layer=0, head=0, ks=()),
     r"^ks: got \[\], expected positive multipliers"),
    ("diagonal-no-query", lambda c: _heads("detectors").previous_token_score(torch.zeros(1, 4, 1, 1)),
     r"^patterns: 1 positions leave no query at distance 1"),
    ("repeated-tokens-vocab", lambda c: _heads("detectors").repeated_tokens(c.model, 10**6, 1),
     r"^seq_len: 1000000 distinct tokens needed, the vocabulary has"),
    ("head-scores-detector", lambda c: _head_scores().scores("nope"), r"^detector: got 'nope', expected one of"),
    ("check-head", lambda c: _heads("mod10").check_head(c.model, 0, 9),
     r"^head: got 0\.9; the model has 2 layers of 4"),
    ("mod10-seeds", lambda c: _heads("mod10").mod10_features(c.model, 0, 0, seeds=()),
     r"^seeds: expected at least one SAE seed"),
    ("input-mode", lambda c: _heads("ov").input_mode("sideways", 0), r"^mode: got 'sideways', expected one of"),
    ("succession-tasks-str", lambda c: _heads("succession").succession_scores(c.model, tasks="days"),
     r"^tasks: expected a non-empty list of task names"),
    ("succession-no-tokenizer", lambda c: _heads("succession").succession_scores(_no_tokenizer(c.model)),
     r"^model: succession tasks need a tokenizer"),
    ("wild-batch-size", lambda c: _heads("wild").heads_in_the_wild(c.model, ["a b"], batch_size=0),
     r"^batch_size: got 0, expected at least 1"),
]


# ---------------------------------------------------------------- neurons/

def _neu(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lmscope.neurons.{name}")


def _gauss(**kw: Any) -> Any:
    X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    return _neu("gaussian").GaussianProbe(**kw).fit(X, np.array([0, 1] * 4))


NEURONS = [
    ("ablation-mode", lambda c: _neu("ablation")._intervention(["blocks.0.mlp.hook_post:0"], "half", {}),
     r"^mode: expected zero or mean, got 'half'"),
    ("ranker-method", lambda c: _neu("analysis").make_ranker("magic"), r"^method: expected one of .*got 'magic'"),
    ("ranker-param", lambda c: _neu("analysis").make_ranker("iou", bogus=1), r"^method: iou: bad parameter"),
    ("gaussian-max-neurons", lambda c: _gauss(max_neurons=-1), r"^max_neurons: expected an integer >= 0"),
    ("gaussian-covariance", lambda c: _gauss(covariance="full"), r"^covariance: expected 'per_class' or 'shared'"),
    ("mass-weights-1d", lambda c: _neu("probe").top_neurons_by_mass(np.zeros(3)),
     r"^weights: expected shape \[n_classes, n_neurons\]"),
    ("features-dtype", lambda c: _neu("rankers").as_features(np.array([["a"]], dtype=object)),
     r"^X: expected a numeric array, found dtype object"),
    ("features-type", lambda c: _neu("rankers").as_features([[1.0]]),
     r"^X: expected a numpy array or torch tensor, found list"),
    ("features-empty", lambda c: _neu("rankers").as_features(np.zeros((0, 3))), r"^X: expected a non-empty array"),
    ("labels-2d", lambda c: _neu("rankers").as_labels(np.zeros((2, 2)), 2), r"^y: expected shape \[n_samples\]"),
]


# ---------------------------------------------------------------- data/, activations/, autointerp/, misc

def _data(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lmscope.data.{name}")


def _labeled(sentences: list[list[str]], labels: list[list[str]]) -> Any:
    return _data("labels").LabeledCorpus(sentences, labels, "c.conllu")


DATA = [
    ("export-out-file", lambda c: _data("export").export_synthetic(_write(c, "f", "x"), n_samples=2),
     r"^out_dir: .*f is a file, expected a directory"),
    ("jsonl-labels-blank", lambda c: _data("formats").parse_jsonl_labels(
        _write(c, "l.jsonl", '{"tokens": ["a"], "labels": [" "]}\n')), r"l\.jsonl.*'labels' item 0 is empty"),
    ("balanced-2d", lambda c: _data("labels").balanced_indices(np.zeros((2, 2))), r"^labels: expected a flat sequence"),
    ("split-one-sentence", lambda c: _data("labels").train_test_split_sentences(_labeled([["a"]], [["X"]])),
     r"c\.conllu: 1 sentence\(s\); a train/test split needs at least 2"),
    ("corpus-misaligned", lambda c: _labeled([["a"]], []), r"c\.conllu: 1 sentences but 0 label lists"),
    ("sample-pos", lambda c: _data("samples").Sample.from_dict({"text": "a", "kind": "k", "pos": [1]}),
     r"^field 'pos': expected a list of strings or null"),
    ("sample-items", lambda c: _data("samples").Sample.from_dict({"text": "a", "kind": "k", "item_positions": ["x"]}),
     r"^field 'item_positions': expected a list of integers or null"),
    ("synthetic-kind", lambda c: _data("synthetic").generate_one(__import__("random").Random(0), "poem"),
     r"^kind: got 'poem', expected one of"),
    ("synthetic-mix", lambda c: _data("synthetic").generate_corpus(3, mix={}), r"^mix: expected a non-empty dict"),
    ("successor-n", lambda c: _data("synthetic").successor_eval_prompts(-1),
     r"^n_per_task: got -1, expected an integer"),
    ("greater-than-n", lambda c: _data("synthetic").greater_than_prompts(-1), r"^n: got -1, expected an integer >= 0"),
    ("tokenizer-max-length", lambda c: _data("tokenizer").train_tokenizer(["a"], model_max_length=0),
     r"^model_max_length: got 0, expected a positive integer"),
    ("tokenizer-item-type", lambda c: _data("tokenizer").train_tokenizer([3]),
     r"^samples_or_texts\[0\]: expected a Sample or a str, got int"),
    ("save-tokenizer-file", lambda c: _data("tokenizer").save_tokenizer(c.model.tokenizer, _write(c, "t", "x")),
     r"t: is a file, expected a directory for the tokenizer"),
]


def _act(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lmscope.activations.{name}")


def _extract(c: Any, sentences: list[list[str]], out: Path, **cfg: Any) -> Any:
    from lmscope.activations import ExtractConfig, extract

    return extract(c.model, sentences, out, ExtractConfig(("blocks.0.hook_resid_post",), **cfg))


def _store_with_manifest(c: Any, manifest: str | None) -> Any:
    from lmscope.activations import ActivationStore

    root = c.tmp / "store"
    root.mkdir()
    if manifest is None:
        (root / "manifest.json").mkdir()
    else:
        (root / "manifest.json").write_text(manifest)
    return ActivationStore(root)


def _ai(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lmscope.autointerp.{name}")


def _rule(exclude_first: int) -> Any:
    from lmscope.dictionary.positions import PositionRule

    return PositionRule(False, exclude_first)


ACTIVATIONS_AUTOINTERP_MISC = [
    ("aggregate-words", lambda c: _act("align").aggregate_words(torch.zeros(2, 3), torch.tensor([0, 1]), 2, "median"),
     r"^aggregate: expected one of .*got 'median'"),
    ("word-activations-aggregate", lambda c: _act("collect").word_activations(
        c.model, [["a"]], ["blocks.0.hook_resid_post"], aggregate="median"), r"^aggregate: expected one of"),
    ("word-activations-too-long", lambda c: _act("collect").word_activations(
        c.model, [["the"] * 300], ["blocks.0.hook_resid_post"], corpus_name="c.txt"),
     r"^c\.txt:1: sentence has \d+ tokens; the model's context is 128"),
    ("extract-batch-tokens", lambda c: _extract(c, [["a"]], c.tmp / "s", batch_tokens=0),
     r"^batch_tokens: expected a positive integer, got 0"),
    ("extract-empty-sentence", lambda c: _extract(c, [["a"], []], c.tmp / "s"),
     r"^corpus: expected non-empty sentences"),
    ("extract-into-other-dir", lambda c: (_write(c, "notes.txt", "x"), _extract(c, [["a"]], c.tmp)),
     r"^out_dir: .* exists and is not an activation store"),
    ("store-manifest-deep", lambda c: _store_with_manifest(c, "[" * 100000 + "]" * 100000),
     r"manifest\.json: JSON nested too deeply"),
    ("store-manifest-dir", lambda c: _store_with_manifest(c, None), r"manifest\.json: cannot read"),
    ("openai-url-scheme", lambda c: _ai("llm").OpenAIClient("ftp://host/v1", "m").complete("hi"),
     r"^base_url: ftp://host/v1: expected an http:// or https:// URL"),
    ("local-lm-batch-size", lambda c: _ai("local").LocalLM(("m", "t"), batch_size=0),
     r"^batch_size: expected a positive integer, got 0"),
    ("hf-explainer-counts", lambda c: _ai("local").HFExplainer(SimpleNamespace(), max_records=0),
     r"^HFExplainer: expected positive max_records, max_words and max_new_tokens"),
    ("hf-simulator-filler", lambda c: _ai("local").HFSimulator(SimpleNamespace(), filler="\t"),
     r"^HFSimulator: filler must not contain a tab"),
    ("hf-simulator-batch", lambda c: _ai("local").HFSimulator(SimpleNamespace(), batch_size=0),
     r"^HFSimulator: batch_size must be a positive integer"),
    ("record-counts", lambda c: _ai("records").RecordConfig(n_top_explain=0),
     r"^record counts: expected non-negative integers \(n_top_explain >= 1\)"),
    ("record-threshold", lambda c: _ai("records").RecordConfig(threshold=1.5),
     r"^threshold: expected a fraction in \(0, 1\), got 1\.5"),
    ("units-per-point", lambda c: _ai("result").score_texts(c.model, ["a b"], units_per_point=0),
     r"^units_per_point: expected a positive integer, got 0"),
    ("text-activations-no-token", lambda c: _ai("text").text_activations(
        c.model, ["a"], {"blocks.0.hook_resid_post": [0]}, rule=_rule(40)), r"^texts: no token left to score"),
    ("choose-columns-pattern", lambda c: _ai("text").choose_columns(c.model, ["blocks.0.attn.hook_pattern"], None, 0),
     r"^points: blocks\.0\.attn\.hook_pattern is an attention pattern"),
    ("check-dictionary-width", lambda c: _ai("text").check_dictionary(c.model, _dictionary(d_in=16)),
     r"^dictionary: the dictionary reads 16 dimensions at blocks\.0\.hook_resid_post, but this model has 32"),
    ("output-dir-not-writable", lambda c: __import__("lmscope.fileio", fromlist=["x"]).check_output_dir(
        "/proc/lmscope-out"), r"^out_dir: /proc/lmscope-out: /proc is not writable"),
    ("output-dir-no-space", lambda c: __import__("lmscope.fileio", fromlist=["x"]).check_output_dir(
        c.tmp / "o", need_bytes=2**62), r"^out_dir: .*o needs about [\d,]+ MiB, but .* has [\d,]+ MiB free"),
    ("read-result-dir", lambda c: __import__("lmscope.results", fromlist=["x"]).read_result(
        (c.tmp / "result.json").mkdir() or c.tmp), r"result\.json: cannot be read"),
    ("figure-not-numbers", lambda c: __import__("lmscope.report.figures", fromlist=["x"]).heatmap(
        [["a", object()]], title="t"), r"expected numbers, got list"),
    ("crate-heldout-fraction", lambda c: __import__("lmscope.whitebox.train", fromlist=["x"]).train_crate(
        c.tmp / "w", heldout_fraction=1.5), r"^heldout_fraction: expected a fraction in \(0, 1\), got 1\.5"),
    ("demo-max-texts", lambda c: __import__("lmscope.demo_real", fromlist=["x"]).run_real_demo(
        "zoo:gpt2-tiny", None, c.tmp, max_texts=0), r"^max_texts: expected an integer >= 1, got 0"),
    ("demo-context-tokens", lambda c: __import__("lmscope.demo_real", fromlist=["x"]).run_real_demo(
        "zoo:gpt2-tiny", None, c.tmp, context_tokens=4), r"^context_tokens: expected an integer >= 8, got 4"),
]

CASES = DICTIONARY + MODEL + CAUSAL + CIRCUITS + HEADS + NEURONS + DATA + ACTIVATIONS_AUTOINTERP_MISC


@pytest.mark.parametrize(("call", "words"), [pytest.param(f, w, id=i) for i, f, w in CASES])
def test_refused(ctx: SimpleNamespace, call: Callable[[SimpleNamespace], Any], words: str) -> None:
    refused(lambda: call(ctx), words)


def test_patch_source_of_another_length(model: Any) -> None:
    refused(lambda: _patch_mismatch(model), r"^patch blocks\.0\.hook_resid_post: source shape .* differs from the "
                                             r"base run's .*; use inputs of the same length")
