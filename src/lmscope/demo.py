"""`lmscope demo`: load (or train) the zoo, check hook parity, and write a report about the main model.

Each analysis contributes a section through a function in `DEMO_SECTIONS`; later capabilities append
theirs, so the demo grows into a tour of lmscope on the embedded zoo.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmscope.model import zoo
from lmscope.model.hooked import HookedModel
from lmscope.model.parity import check_parity
from lmscope.model.stats import neuron_stats
from lmscope.report import Report, Section
from lmscope.report.model_sections import attention_section, model_card_section, neuron_stats_section, parity_section

log = logging.getLogger(__name__)
MAIN_MODEL = "gpt2-tiny"
ZOO_MODELS = ("gpt2-tiny", "neox-tiny", "llama-tiny")
ATTENTION_PROMPT = "chapter 17 was long , and the next chapter is chapter 18"
Stage = Callable[[str, int, int], None]


@dataclass
class DemoContext:
    """What the demo's sections share: the loaded zoo models and their cards."""

    models: dict[str, HookedModel]
    cards: dict[str, dict[str, Any] | None]
    corpus_texts: list[str]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> HookedModel:
        return self.models[MAIN_MODEL]


def _card(ctx: DemoContext) -> Section:
    return model_card_section(f"zoo:{MAIN_MODEL}", ctx.main.cfg.to_dict(), ctx.cards[MAIN_MODEL])


def _parity(ctx: DemoContext) -> Section:
    reports = {f"zoo:{name}": check_parity(m, ctx.corpus_texts[:8]).to_dict() for name, m in ctx.models.items()}
    ctx.extras["parity"] = reports
    return parity_section(reports)


def _attention(ctx: DemoContext) -> Section:
    """The head whose query before ' 18' attends most to ' 17', the item whose successor comes next."""
    m = ctx.main
    tokens = m.to_str_tokens(ATTENTION_PROMPT)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(m.cfg.n_layers)]
    _, cache = m.run_with_cache(ATTENTION_PROMPT, names=names)
    item = tokens.index(" 17")
    stacked = torch.stack([cache[n][0] for n in names])  # [layer, head, q, k]
    weight = stacked[:, :, -2, item]  # from the last ' chapter' (predicting ' 18') to ' 17'
    layer, head = divmod(int(weight.argmax()), m.cfg.n_heads)
    note = (f"`{ATTENTION_PROMPT}`: in layer {layer}, head {head} the query at the last ' chapter' puts "
            f"{weight.max():.2f} of its attention on ' 17', eight tokens back: the item whose successor ' 18' "
            "the model must produce next. The head fetches the item; whether its OV circuit also increments it is "
            "what the successor-heads section measures.")
    return attention_section(tokens, stacked[layer, head], layer, head, note)


def _neurons(ctx: DemoContext) -> Section:
    return neuron_stats_section([s.to_dict() for s in neuron_stats(ctx.main, ctx.corpus_texts[:64])])


def _pos_neurons(ctx: DemoContext) -> Section:
    """Extract every layer's neurons for POS-tagged sentences, rank them (LCA), evaluate, draw a noun neuron."""
    import tempfile

    from lmscope.activations import ExtractConfig, extract
    from lmscope.activations.collect import word_activations
    from lmscope.data.labels import from_synthetic
    from lmscope.data.synthetic import generate_corpus
    from lmscope.neurons.analysis import evaluate_ranking, rank_neurons
    from lmscope.neurons.dataset import load_dataset
    from lmscope.report.neuron_sections import pos_neurons_section

    m = ctx.main
    corpus = from_synthetic(generate_corpus(POS_SENTENCES, seed=31, mix={"grammar": 0.8, "topic": 0.2}))
    points = tuple(f"blocks.{layer}.mlp.hook_post" for layer in range(m.cfg.n_layers))
    with tempfile.TemporaryDirectory() as tmp:
        store = extract(m, corpus.sentences, Path(tmp) / "store", ExtractConfig(points))
        data = load_dataset(store, corpus, min_count=20, control=False)
        ranking = rank_neurons(data, "lca")
        evaluation = evaluate_ranking(data, ranking, [1, 3, 10, 30, 100])
    noun = ranking.units(1, "NOUN")[0]
    point, index = noun.rsplit(":", 1)
    shown = [list(s.words) for s in generate_corpus(6, seed=77, mix={"grammar": 1.0})]
    acts = word_activations(m, shown, [point])[point][:, int(index)].tolist()
    per_sentence, start = [], 0
    for words in shown:
        per_sentence.append(acts[start : start + len(words)])
        start += len(words)
    return pos_neurons_section(ranking.to_dict(), evaluation, noun, shown, per_sentence, len(data.y))


def _transcoder(ctx: DemoContext) -> Section:
    """Train a transcoder for a middle layer's MLP on the fly, measure it spliced in, read a few features."""
    from lmscope.dictionary.features import feature_reports
    from lmscope.dictionary.recipes import corpus_texts, train_dictionary
    from lmscope.dictionary.report import dictionary_metrics
    from lmscope.report.dictionary_sections import transcoder_section

    m = ctx.main
    layer = m.cfg.n_layers // 2
    est = train_dictionary(m, kind="transcoder", layer=layer, d_sae=TRANSCODER_FEATURES, tokens=TRANSCODER_TOKENS)
    d = est.dictionary_
    texts = corpus_texts(300, seed=999)
    result = dictionary_metrics(m, d, texts)
    reports = [r.to_dict() for r in feature_reports(m, d, texts, n_features=6, k=3)]
    return transcoder_section(f"zoo:{MAIN_MODEL}", d.cfg.to_dict(), result, est.history_, reports)


def _circuit(ctx: DemoContext) -> Section:
    """The greater-than circuit: a transcoder per layer (trained once, cached), one prompt's graph, its check."""
    from lmscope.circuits import greater_than_target, trace_circuit
    from lmscope.dictionary.stack import transcoder_stack
    from lmscope.report.circuit_sections import circuit_section

    m = ctx.main
    tcs = transcoder_stack(m, d_sae=512, tokens=TRANSCODER_TOKENS, l1_coefficient=3.0)  # sparser than _transcoder's
    prompt, start_yy = "the war lasted from the year 1732 to the year 17", 32
    result = trace_circuit(m, tcs, prompt, greater_than_target(m, start_yy), n_iters=4, branches=8, beam=32,
                           threshold=0.01)
    data = result.to_dict()
    paths = result.top_paths(len(result.search.paths))
    rec, top = data["recovery"], next((p for p in paths if len(p.nodes) > 2), paths[0])  # one that goes somewhere
    # the headline is the frozen fraction, in the attributions' frame: the live splice can pass 1 because the final
    # LayerNorm scales a residual stream thinned to the circuit's features back up (see the note)
    ctx.extras["circuit"] = {"recovered": rec["recovered_frozen"], "recovered_live": rec["recovered"],
                             "seconds": result.seconds["build"]}
    note = (f"`{prompt}`: the target is the mean logit of the years after {start_yy} minus the mean logit of the "
            f"years up to it ({result.attribution.value:.3f}). With LayerNorm scales and attention patterns frozen, it "
            "is an exact sum of transcoder features, heads at each source position, embeddings, transcoder errors and "
            f"biases (unexplained remainder {result.attribution.remainder:.1e}); the graph took "
            f"{result.seconds['build'] * 1000:.0f} ms to build. Its largest path of two steps or more: "
            f"{result.path_label(top)} "
            f"({top.value:.3f}). Spliced back alone (every other feature zero, errors frozen), the graph's "
            f"{rec['n_features']} features give {rec['circuit']:.3f} against {rec['clean']:.3f} clean and "
            f"{rec['none']:.3f} with no feature at all (ablation shrinks the residual stream and the final LayerNorm "
            "scales what is left up); with LayerNorm scales and attention frozen as in the attributions, "
            f"{rec['circuit_frozen']:.3f} against {rec['none_frozen']:.3f} with none: "
            f"{_fraction(rec['recovered_frozen'])} of the target recovered. The live splice's fraction "
            f"({_fraction(rec['recovered'])}) is not a share of the target: the final LayerNorm rescales the "
            "thinned residual stream, so it can exceed 100%.")
    return circuit_section(data, m.cfg.n_layers, key="circuit", title="The greater-than circuit", note=note)


def _fraction(value: float | None) -> str:
    """A fraction recovered as a percentage; "n/a" when it is undefined (ablating every feature moved nothing)."""
    return "n/a" if value is None else f"{value:.0%}"


def _causal(ctx: DemoContext) -> Section:
    """NIE of every head, MLP and residual stream on a toxic cue's effect, before and after topic adjustment."""
    from lmscope.causal.recipes import topic_toxicity_mediation
    from lmscope.report.causal_sections import mediation_section

    result = topic_toxicity_mediation(ctx.main)  # cached under the zoo home, keyed by the weights
    loc = result.localization
    intro = (
        "Causal mediation on the topic-confounded corpus: prompts end where an insult may come next (\"Congress "
        "blocked the\"); treated prompts carry a toxic adjective earlier (\"the stupid senator blocked the\"), and "
        "toxic cues are far more common in politics than in cooking, so the topic confounds every treated-control "
        "comparison. Outcome: log P(insult next). Plain patching (unadjusted) credits the components that carry "
        "the topic; comparing within topics (stratified) removes them. Localization (top-3 share of |NIE|, Gini): "
        f"unadjusted {loc['unadjusted']['top_k_share']:.2f} / {loc['unadjusted']['gini']:.2f}, stratified "
        f"{loc['stratified']['top_k_share']:.2f} / {loc['stratified']['gini']:.2f}. Entropy balancing equalises the "
        "topic mix of the two groups (it corrects the TE) but still patches across topics.")
    return mediation_section(result.to_dict(), model_name=f"zoo:{MAIN_MODEL}", treatment="toxic cue",
                             confounder="topic", intro=intro)


def _heads(ctx: DemoContext) -> Section:
    """Succession scores of every head, the best head per task, its mod-10 features and vector arithmetic.

    On zoo:crate-tiny, the zoo model whose attention does the incrementing; zoo:gpt2-tiny, whose MLP0 does
    it (its best head by the paper's formula is a copying head), is shown as the contrast.
    """
    from lmscope import HookedModel
    from lmscope.data.synthetic import generate_corpus
    from lmscope.heads import greater_than_bias, succession_scores
    from lmscope.heads.arithmetic import vector_arithmetic
    from lmscope.heads.mod10 import mod10_features
    from lmscope.heads.wild import heads_in_the_wild
    from lmscope.report.heads_sections import successor_heads_section

    m = HookedModel.from_pretrained(f"zoo:{HEADS_MODEL}")
    succession = succession_scores(m)
    layer, head = succession.best_head()
    features = mod10_features(m, layer, head)
    arithmetic = vector_arithmetic(m, features)
    chance = _chance_levels(m, features, arithmetic)
    wild = heads_in_the_wild(m, [s.text for s in generate_corpus(200, seed=5, split="heldout")])
    main_auto, main_paper = succession_scores(ctx.main), succession_scores(ctx.main, mode="mlp0")
    contrast = {"model": f"zoo:{MAIN_MODEL}", "best": list(main_auto.best_head()),
                "score": float(main_auto.scores.max()), "paper_best": list(main_paper.best_head()),
                "paper_score": float(main_paper.scores.max()),
                "paper_baseline": float(main_paper.baseline[main_paper.best_head()[0]])}  # type: ignore[index]
    ctx.extras["heads"] = {"model": HEADS_MODEL, "best": [layer, head], "score": float(succession.scores[layer, head]),
                           "arithmetic": arithmetic.overall, "mod10_coverage": features.mean_coverage,
                           "probe_accuracy": features.probe["accuracy"], "chance": chance, "contrast": contrast}
    return successor_heads_section(f"zoo:{HEADS_MODEL}", succession.to_dict(), greater_than_bias(m, layer, head),
                                   features.to_dict(), arithmetic.to_dict(), wild.head_summary(layer, head),
                                   contrast, chance=chance)


def _versus_chance(rate: float, chance: float, n: int) -> dict[str, Any]:
    """`rate` measured on `n` trials against the rate `chance` of guessing: the bound 3 binomial standard errors
    above chance, and whether the rate stays under it (then the measurement cannot tell it from guessing)."""
    bound = chance + 3 * (chance * (1 - chance) / max(n, 1)) ** 0.5
    return {"rate": rate, "chance": chance, "bound": bound, "n": n, "at_chance": rate <= bound}


def _chance_levels(model: HookedModel, features: Any, arithmetic: Any) -> dict[str, dict[str, Any]]:
    """The mod-10 probe's and the vector arithmetic's chance levels, so the report can say when a number is
    no better than guessing (on the zoo models both are; Gould et al.'s numbers come from far larger models).

    Probe: 1/10, the accuracy of guessing among the ten residues (its held-out rows are stratified by residue).
    Arithmetic: an edit succeeds when the head's top token among the task's tokens is the one right successor, so
    a head that picks one at random succeeds 1/(tokens of the variant) of the time; per task the smallest variant
    is taken (an upper bound) and the tasks are weighted by their edits. Beside it, a measured control: the same
    edits with every residue's feature swapped for the next residue's (`features_rolled`, k chosen as for the real
    features).
    """
    import dataclasses

    from lmscope.heads.arithmetic import vector_arithmetic
    from lmscope.heads.mod10 import N_RESIDUES
    from lmscope.heads.succession import _select_tasks, task_tokens

    n_edits: dict[str, int] = arithmetic.n_edits
    groups, _ = task_tokens(model.tokenizer, _select_tasks(list(n_edits)))
    smallest = {t: min(len(g.ids) for g in groups if g.task == t) for t in n_edits}
    total = sum(n_edits.values())
    arith = _versus_chance(arithmetic.overall, sum(n / smallest[t] for t, n in n_edits.items()) / total, total)
    rolled = dataclasses.replace(features, directions=features.directions.roll(1, 0),
                                 scales=features.scales.roll(1, 0))
    arith["features_rolled"] = vector_arithmetic(model, rolled).overall  # k tuned on the same grid
    probe = features.probe
    return {"arithmetic": arith,
            "probe": _versus_chance(probe["accuracy"], 1 / N_RESIDUES, int(probe["n_test"]))}


def _whitebox(ctx: DemoContext) -> Section:
    """CRATE vs a ReLU GPT of the same size: held-out loss and offline neuron-interpretability scores per layer."""
    from lmscope.report.whitebox_sections import comparison_section
    from lmscope.whitebox.compare import CompareConfig, cached_comparison

    # the CLI's defaults (all neurons, 1500 sentences); cached by weights, the models train on first use
    result = cached_comparison([f"zoo:{name}" for name in WHITEBOX_MODELS], CompareConfig())
    ctx.extras["whitebox"] = {name: result.per_model[f"zoo:{name}"]["summary"]["all"] for name in WHITEBOX_MODELS}
    return comparison_section(result.to_dict())


POS_SENTENCES = 400
TRANSCODER_FEATURES = 1024
TRANSCODER_TOKENS = 200_000
WHITEBOX_MODELS = ("crate-tiny", "gpt2-tiny-relu")
HEADS_MODEL = "crate-tiny"
DEMO_SECTIONS: list[Callable[[DemoContext], Section]] = [_card, _parity, _attention, _neurons, _pos_neurons,
                                                         _transcoder]
DEMO_SECTIONS.append(_causal)
DEMO_SECTIONS.append(_circuit)
DEMO_SECTIONS.append(_heads)
DEMO_SECTIONS.append(_whitebox)


def load_zoo(*, stage: Stage | None = None) -> DemoContext:
    """Load every zoo model (training missing ones into the cache) and a slice of held-out corpus."""
    from lmscope.data.synthetic import generate_corpus

    models, cards = {}, {}
    for name in ZOO_MODELS:
        def progress(i: int, n: int, name: str = name) -> None:
            if stage is not None:
                stage(f"training zoo:{name}", i, n)

        models[name] = HookedModel.from_pretrained(f"zoo:{name}", progress=progress)
        cards[name] = zoo.card(name)
    texts = [s.text for s in generate_corpus(64, seed=12345, split="heldout")]
    return DemoContext(models, cards, texts)


def run_demo(out_dir: str | Path, *, overwrite: bool = False, stage: Stage | None = None) -> dict[str, Any]:
    """Build the demo report into `out_dir` (report.html and its result.json, through the one writer
    `lmscope.results.write_result`); returns the paths written and a short summary."""
    from lmscope.fileio import check_writable
    from lmscope.results import HTML_NAME, RESULT_NAME

    for name in (HTML_NAME, RESULT_NAME):  # refuse before minutes of work, not after
        check_writable(Path(out_dir) / name, overwrite=overwrite)
    start = time.perf_counter()
    ctx = load_zoo(stage=stage)
    report = Report("lmscope demo", meta={"model": f"zoo:{MAIN_MODEL}", "zoo": list(ZOO_MODELS)})
    for i, make in enumerate(DEMO_SECTIONS):
        if stage is not None:
            stage("building report", i, len(DEMO_SECTIONS))
        report.add(make(ctx))
    paths = report.write(out_dir, overwrite=overwrite)
    card = ctx.cards[MAIN_MODEL] or {}
    return {
        "report": str(paths["html"]), "result": str(paths["json"]), "seconds": time.perf_counter() - start,
        "parity_ok": all(r["ok"] for r in ctx.extras["parity"].values()),
        "heldout_loss": card.get("heldout_loss"), "unigram_loss": card.get("unigram_loss"),
        "ordinal_accuracy": card.get("ordinal", {}).get("in_distribution", {}).get("accuracy"),
    }
