"""`lmscope demo` end to end (one run, through the CLI), every section checked against answers the test derives
itself: the corpus's planted structure (topic-confounded insults, the greater-than task, the counting tasks),
plain-torch recomputations (the target logit difference, the live circuit splice, log P(insult next), held-out
losses) and closed forms (localization, relative improvement, chance levels).

The demo's caches (transcoders, mediation, white-box comparison) are computed cold in the suite's LMSCOPE_HOME
and reused by the section checks below, which only read them back.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from lmscope import HookedModel

TOPICS_BY_RATE = (("politics", "sports"), ("cooking", "weather"))  # toxic rate 0.5 and 0.3, against 0.05 each


@dataclass
class Demo:
    out: Path
    summary: dict[str, Any]
    result: dict[str, Any]
    html: str
    extras: dict[str, Any]  # the DemoContext's extras: what the sections reported beside their data

    def section(self, key: str) -> dict[str, Any]:
        return self.result["sections"][key]["data"]


def _cli(*argv: str) -> tuple[int, str, str]:
    from lmscope.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    import lmscope.demo as demo_module

    out = tmp_path_factory.mktemp("demo")
    seen: dict[str, Any] = {}
    load_zoo = demo_module.load_zoo

    def keep_context(**kwargs: Any) -> Any:
        seen["ctx"] = load_zoo(**kwargs)
        return seen["ctx"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo_module, "load_zoo", keep_context)
        code, stdout, stderr = _cli("demo", "--out", str(out), "--json")
    assert code == 0, stderr[-3000:]
    yield Demo(out, json.loads(stdout), json.loads((out / "result.json").read_text()),
               (out / "report.html").read_text(), seen["ctx"].extras)


def test_demo_writes_every_section_and_refuses_overwrite(demo: Demo) -> None:
    result = demo.result
    assert demo.summary["parity_ok"] and all(r["ok"] for r in demo.section("hook_parity")["models"].values())
    assert list(result["sections"]) == ["model_card", "hook_parity", "attention_pattern", "neuron_stats",
                                        "pos_neurons", "transcoder", "causal_mediation", "circuit",
                                        "successor-heads", "whitebox"]
    tc = demo.section("transcoder")["result"]
    assert tc["metrics"]["fvu"] < 0.1 and tc["spliced"]["loss_recovered"] > 0.5
    pos = demo.section("pos_neurons")
    assert pos["evaluation"]["all_neurons"] > pos["evaluation"]["majority"] + 0.5
    assert pos["noun_neuron"].startswith("blocks.") and len(pos["heatmap"]["sentences"]) == 6
    assert demo.section("model_card")["card"]["name"] == "gpt2-tiny"
    assert "<script src=" not in demo.html and "Model card" in demo.html
    before = (demo.out / "result.json").read_bytes()
    code, _, err = _cli("demo", "--out", str(demo.out))
    assert code == 2 and "already exists" in err and (demo.out / "result.json").read_bytes() == before


# --- the greater-than circuit ---------------------------------------------------------------------------------

def _year_ids(model: HookedModel) -> tuple[list[int], list[int]]:
    """The single tokens '00'..'99' of the zoo tokenizer: years after 32 (plus) and up to it (minus)."""
    vocab = model.tokenizer.get_vocab()
    ids = [vocab[f"{n:02d}"] for n in range(100)]
    return ids[33:], ids[:33]


def test_demo_circuit_target_and_splice_match_plain_torch(demo: Demo) -> None:
    """The target is the model's own logit difference (the zoo learned the planted greater-than task: later
    years win), its attribution is exact, and the spliced runs' numbers are what a plain splice gives."""
    from lmscope.demo import MAIN_MODEL, TRANSCODER_TOKENS
    from lmscope.dictionary.stack import transcoder_stack

    data = demo.section("circuit")["circuit"]
    model = HookedModel.from_pretrained(f"zoo:{MAIN_MODEL}")
    plus, minus = _year_ids(model)
    assert sorted(data["target"]["plus"]) == sorted(plus) and sorted(data["target"]["minus"]) == sorted(minus)
    ids = torch.tensor([model.tokenizer(data["prompt"])["input_ids"]])
    with torch.no_grad():
        logits = model.hf(ids).logits[0, -1].double()
    value = float(logits[plus].mean() - logits[minus].mean())
    assert data["target_value"] == pytest.approx(value, rel=1e-5) and value > 1.0  # later years win
    assert float(logits.softmax(-1)[plus].sum()) > 5 * float(logits.softmax(-1)[minus].sum())
    att, rec = data["attribution"], data["recovery"]
    assert abs(att["remainder"]) < 1e-5 and sum(att["by_kind"].values()) == pytest.approx(value, abs=1e-5)
    tcs = transcoder_stack(model, d_sae=512, tokens=TRANSCODER_TOKENS, l1_coefficient=3.0)  # the demo's, cached
    keep = [(f["layer"], f["index"], f["pos"]) for f in data["features"]]
    assert len(keep) == rec["n_features"]
    plain = _plain_splice(model, tcs, ids, keep, plus, minus)
    assert rec["clean"] == pytest.approx(value, rel=1e-5)
    assert rec["circuit"] == pytest.approx(plain["circuit"], rel=1e-4)
    assert rec["none"] == pytest.approx(plain["none"], rel=1e-4)
    # why the live fraction can pass 1: with only the circuit's features the residual stream shrinks and the final
    # LayerNorm scales it back up; with that one scale frozen at its clean value the fraction is under 1
    assert plain["scale_circuit"] < 0.5 * plain["scale_clean"]
    frozen_final = (plain["circuit_final_frozen"] - plain["none_final_frozen"]) / (value - plain["none_final_frozen"])
    assert 0 < frozen_final < 1


def test_demo_reports_the_sane_fraction_recovered(demo: Demo) -> None:
    """The fraction the demo reports is the frozen one (the attribution frame), a fraction in (0, 1]; the live
    splice overshoots through the final LayerNorm (see the test above) and must not be the headline."""
    rec = demo.section("circuit")["circuit"]["recovery"]
    assert 0 < rec["recovered_frozen"] <= 1
    assert demo.extras["circuit"]["recovered"] == pytest.approx(rec["recovered_frozen"])
    assert demo.extras["circuit"]["recovered_live"] == pytest.approx(rec["recovered"])
    said = demo.html.split('id="section-circuit"')[1].split("<section")[0]
    frozen = said.index(f"<dd>{rec['recovered_frozen']:.3f}</dd>")  # the section leads with the frozen fraction
    live = said.index(f"<dd>{rec['recovered']:.3f}</dd>")
    assert frozen < live and "can exceed 1" in said[frozen:live]  # the live one comes later, labelled


@torch.no_grad()
def _plain_splice(model: HookedModel, tcs: dict[int, Any], ids: torch.Tensor, keep: list[tuple[int, int, int]],
                  plus: list[int], minus: list[int]) -> dict[str, float]:
    """Each MLP output replaced by its transcoder's decoding of the kept features plus the clean error, written
    with plain forward hooks on the HF modules; also with the final LayerNorm's scale frozen at the clean run's."""
    blocks, ln_f = model.hf.transformer.h, model.hf.transformer.ln_f
    n = ids.shape[1]
    errors: dict[int, torch.Tensor] = {}
    scale: dict[str, torch.Tensor] = {}

    def run(mask: dict[int, torch.Tensor] | None, frozen: torch.Tensor | None = None) -> float:
        handles = []
        for layer, tc in tcs.items():
            def block_mlp(mod: Any, args: Any, out: torch.Tensor, layer: int = layer, tc: Any = tc) -> Any:
                x = args[0]  # ln_2's output, the MLP input
                y_hat, z = tc(x)
                if mask is None:
                    errors[layer] = out - y_hat
                    return None
                return tc.decode(z * mask[layer]) + errors[layer]
            handles.append(blocks[layer].mlp.register_forward_hook(block_mlp))

        def final(mod: Any, args: Any, out: torch.Tensor) -> Any:
            x = args[0]
            scale["now"] = (x.var(-1, unbiased=False, keepdim=True) + mod.eps).sqrt()
            if frozen is None:
                return None
            return (x - x.mean(-1, keepdim=True)) / frozen * mod.weight + mod.bias
        handles.append(ln_f.register_forward_hook(final))
        try:
            logits = model.hf(ids).logits[0, -1].double()
        finally:
            for h in handles:
                h.remove()
        return float(logits[plus].mean() - logits[minus].mean())

    run(None)
    clean_scale = scale["now"]
    kept = {layer: torch.zeros(n, tc.cfg.d_sae) for layer, tc in tcs.items()}
    for layer, f, p in keep:
        kept[layer][p, f] = 1.0
    none = {layer: torch.zeros_like(m) for layer, m in kept.items()}
    circuit = run(kept)
    circuit_scale = scale["now"]
    return {"circuit": circuit, "none": run(none), "scale_clean": float(clean_scale[0, -1]),
            "scale_circuit": float(circuit_scale[0, -1]), "circuit_final_frozen": run(kept, clean_scale),
            "none_final_frozen": run(none, clean_scale)}


# --- the topic-confounded mediation ----------------------------------------------------------------------------

def test_demo_mediation_against_the_planted_confounding(demo: Demo) -> None:
    """Rows and strata follow the corpus's planted rates; the outcome is the model's own log P(insult next); the
    zoo model learned that insults are likelier in politics and sports, so the plain (unadjusted) comparison is
    biased upwards by the topic and adjusting lowers it, as the exact difference of means says it must."""
    from lmscope.causal.data import topic_mediation_rows
    from lmscope.causal.recipes import DEFAULTS, topic_toxicity_mediation
    from lmscope.data.topics import TOXIC_WORDS
    from lmscope.demo import MAIN_MODEL

    data = demo.section("causal_mediation")
    rows = topic_mediation_rows(DEFAULTS["rows"], seed=DEFAULTS["seed"], max_per_cell=DEFAULTS["max_per_cell"])
    cap = DEFAULTS["max_per_cell"]
    for topic in TOPICS_BY_RATE[0]:  # rate 0.5 and 0.3: both cells fill to the cap
        assert data["strata"][topic] | {"share": 0} == {"treated": cap, "control": cap, "share": 0}
    for topic in TOPICS_BY_RATE[1]:  # rate 0.05: few treated rows
        assert data["strata"][topic]["control"] == cap and 0 < data["strata"][topic]["treated"] < cap // 2
    for topic, cell in data["strata"].items():
        assert cell["treated"] == sum(r["topic"] == topic and r["toxic_cue"] for r in rows)
        assert cell["share"] == pytest.approx(sum(r["topic"] == topic for r in rows) / len(rows))

    model = HookedModel.from_pretrained(f"zoo:{MAIN_MODEL}")
    insults = sorted({model.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in TOXIC_WORDS})
    y = {}
    with torch.no_grad():
        for i, r in enumerate(rows):
            logp = model.hf(torch.tensor([model.tokenizer(r["text"])["input_ids"]])).logits[0, -1].log_softmax(-1)
            y[i] = float(logp[insults].logsumexp(-1))
    mean = lambda keys: sum(y[i] for i in keys) / len(keys)  # noqa: E731
    cells = {(t, c): [i for i, r in enumerate(rows) if r["topic"] == t and r["toxic_cue"] == c]
             for t in data["strata"] for c in (0, 1)}
    result = topic_toxicity_mediation(model)  # the demo's, read back from the cache
    treated = [i for i, r in enumerate(rows) if r["toxic_cue"]]
    control = [i for i, r in enumerate(rows) if not r["toxic_cue"]]
    assert result.meta["mean_outcome_treated"] == pytest.approx(mean(treated), abs=1e-4)
    assert result.meta["mean_outcome_control"] == pytest.approx(mean(control), abs=1e-4)
    for high in TOPICS_BY_RATE[0]:  # the model learned the planted rates
        for low in TOPICS_BY_RATE[1]:
            assert mean(cells[(high, 0)]) > mean(cells[(low, 0)]) + 0.5
    difference = mean(treated) - mean(control)
    stratified = sum(cell["share"] * (mean(cells[(t, 1)]) - mean(cells[(t, 0)])) for t, cell in data["strata"].items())
    assert difference - stratified > 0.1  # the topic's upward bias, exact on all rows
    effects = result.effects
    assert effects["unadjusted"]["te"]["estimate"][0] - effects["stratified"]["te"]["estimate"][0] > 0.1
    for scheme, exact in (("unadjusted", difference), ("stratified", stratified)):
        te = effects[scheme]["te"]
        assert te["ci_low"][0] <= exact <= te["ci_high"][0]  # the pair-sampled estimate covers the exact value
    for scheme, loc in data["localization"].items():  # closed forms of the NIE estimates
        nie = torch.tensor(effects[scheme]["nie"]["estimate"], dtype=torch.float64).abs()
        assert loc["top_k_share"] == pytest.approx(float(nie.topk(3).values.sum() / nie.sum()), rel=1e-6)
        pairs = (nie[:, None] - nie[None, :]).abs().sum()  # Gini as the mean absolute difference / (2 mean)
        assert loc["gini"] == pytest.approx(float(pairs / (2 * len(nie) * nie.sum())), rel=1e-6)


# --- successor heads ---------------------------------------------------------------------------------------------

def _chance(model: HookedModel, n_edits: dict[str, int]) -> float:
    """The success rate of a head that picks a token of the task (same variant) at random: an edit succeeds when
    the top token is one given item, so 1 / (items in the variant); the smallest variant bounds it from above."""
    from lmscope.heads.succession import _select_tasks, task_tokens

    groups, _ = task_tokens(model.tokenizer, _select_tasks(list(n_edits)))
    smallest = {t: min(len(g.ids) for g in groups if g.task == t) for t in n_edits}
    return sum(n / smallest[t] for t, n in n_edits.items()) / sum(n_edits.values())


def test_demo_successor_heads_against_known_answers(demo: Demo) -> None:
    """crate-tiny's best head increments (the corpus's counting tasks) where its input alone does not; on
    gpt2-tiny the paper's formula crowns a copying head that MLP0 feeds."""
    from lmscope.demo import HEADS_MODEL

    heads = demo.section("successor-heads")
    assert heads["model"] == f"zoo:{HEADS_MODEL}"
    best = max(max(row) for row in heads["succession"]["scores"])
    assert best >= 0.5 > max(heads["succession"]["input_baseline"]["scores"])  # the bar, not a copy
    contrast = heads["contrast"]  # gpt2-tiny: the paper's formula crowns a copying head that MLP0 feeds
    assert contrast["score"] < 0.3 and contrast["paper_baseline"] > contrast["paper_score"] >= 0.5
    assert "never reads MLP0" in demo.html
    assert len(heads["succession"]["scores"]) == 4 and len(heads["mod10"]["features"]) == 10
    arith = heads["arithmetic"]
    rates, n = arith["rates"], arith["n_edits"]
    assert arith["overall"] == pytest.approx(sum(rates[t] * n[t] for t in n) / sum(n.values()))


def test_demo_mod10_probe_and_arithmetic_beat_chance_or_say_so(demo: Demo) -> None:
    """The mod-10 probe (10 balanced residues) and the vector arithmetic (one right token among the task's) are
    measured against chance: either they beat it clearly, or the section's own text says they do not."""
    from lmscope.demo import HEADS_MODEL

    heads = demo.section("successor-heads")
    arith, probe = heads["arithmetic"], heads["mod10"]["probe"]
    chance = _chance(HookedModel.from_pretrained(f"zoo:{HEADS_MODEL}"), arith["n_edits"])
    probe_chance = 0.1 + 3 * (0.1 * 0.9 / probe["n_test"]) ** 0.5  # 3 sigma above chance on the held-out rows
    said = demo.html.split('id="section-successor-heads"')[1].split("<section")[0]  # the section's own text
    assert arith["overall"] > 2 * chance or "chance" in said, (arith["overall"], chance)
    assert probe["accuracy"] > probe_chance or "chance" in said, (probe["accuracy"], probe_chance)
    # the section's chance levels are these, with the same 3-sigma bound for the arithmetic, and it says "at chance"
    # exactly when a number stays under its bound
    n = sum(arith["n_edits"].values())
    arith_bound = chance + 3 * (chance * (1 - chance) / n) ** 0.5
    levels = heads["chance"]
    assert levels["arithmetic"]["chance"] == pytest.approx(chance) and levels["arithmetic"]["n"] == n
    assert levels["arithmetic"]["bound"] == pytest.approx(arith_bound)
    assert levels["probe"]["chance"] == pytest.approx(0.1) and levels["probe"]["bound"] == pytest.approx(probe_chance)
    low = {"arithmetic": arith["overall"] <= arith_bound, "probe": probe["accuracy"] <= probe_chance}
    assert {k: v["at_chance"] for k, v in levels.items()} == low
    assert ("at chance" in said) == any(low.values())
    assert demo.extras["heads"]["chance"] == levels


# --- the white-box comparison -------------------------------------------------------------------------------------

@torch.no_grad()
def _plain_heldout_loss(model: HookedModel, n_samples: int, seq_len: int) -> float:
    """Next-token cross-entropy over non-overlapping windows of the zoo's held-out corpus, each document after
    the BOS/separator token, written out with the HF model alone."""
    from lmscope.data.synthetic import generate_corpus
    from lmscope.whitebox.compare import HELDOUT_SEED

    tok = model.tokenizer
    stream: list[int] = []
    for s in generate_corpus(n_samples, seed=HELDOUT_SEED, split="heldout"):
        stream += [tok.bos_token_id, *tok(s.text, add_special_tokens=False)["input_ids"]]
    ids = torch.tensor(stream)
    n = (len(ids) - 1) // seq_len
    x, y = ids[: n * seq_len].view(n, seq_len), ids[1: n * seq_len + 1].view(n, seq_len)
    total = sum(float(torch.nn.functional.cross_entropy(model.hf(input_ids=x[i: i + 64]).logits.flatten(0, 1),
                                                        y[i: i + 64].flatten(), reduction="sum"))
                for i in range(0, n, 64))
    return total / y.numel()


def test_demo_whitebox_losses_sizes_and_ratios(demo: Demo) -> None:
    """Both models learned the corpus (held-out loss far under the unigram baseline), their losses and sizes are
    what plain torch gives, and each relative improvement is CRATE's mean over the baseline's, minus 1."""
    from lmscope.demo import WHITEBOX_MODELS
    from lmscope.model import zoo

    comparison = demo.section("whitebox")["comparison"]
    cfg = comparison["config"]
    crate, base = (f"zoo:{name}" for name in WHITEBOX_MODELS)
    assert comparison["models"] == [crate, base]
    for name in WHITEBOX_MODELS:
        model, row = HookedModel.from_pretrained(f"zoo:{name}"), comparison["per_model"][f"zoo:{name}"]
        assert row["n_params"] == sum(p.numel() for p in model.hf.parameters())
        loss = _plain_heldout_loss(model, cfg["heldout_samples"], cfg["seq_len"])
        assert row["heldout_loss"] == pytest.approx(loss, rel=1e-4)
        assert loss < 0.6 * zoo.card(name)["unigram_loss"]
        assert demo.extras["whitebox"][name] == row["summary"]["all"]
    for layer, metrics in comparison["relative_improvement"][base].items():
        for metric, rel in metrics.items():
            ours = comparison["per_model"][crate]["summary"][layer][metric]["mean"]
            theirs = comparison["per_model"][base]["summary"][layer][metric]["mean"]
            assert rel["value"] == (pytest.approx(ours / theirs - 1) if theirs and theirs > 0 else None)
