"""On random models of every family, with random transcoders (large errors): the decomposition is exact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.circuits import (
    CircuitTrace,
    Target,
    attribute,
    find_paths,
    greater_than_target,
    ov_de_embedding,
    parse_target,
    recovery,
    root_probe,
    trace_circuit,
)
from lmscope.dictionary import DictConfig, Dictionary
from lmscope.errors import InputError
from tiny_models import tiny_hf_model, tiny_hooked_with_tokenizer

IDS = torch.tensor([[0, 5, 7, 9, 11, 3, 5, 8]])
PROMPT_GT = "from the year 1732 to the year 17"


def random_transcoders(model: HookedModel, d_sae: int = 48, layers: list[int] | None = None,
                       skip: bool = False) -> dict[int, Dictionary]:
    out = {}
    for layer in range(model.cfg.n_layers) if layers is None else layers:
        cfg = DictConfig(kind="transcoder", d_in=model.cfg.d_model, d_sae=d_sae, skip=skip,
                         hook_name=f"blocks.{layer}.ln2.hook_normalized", hook_name_out=f"blocks.{layer}.hook_mlp_out")
        tc = Dictionary(cfg, generator=torch.Generator().manual_seed(layer))
        with torch.no_grad():
            tc.b_enc.fill_(0.05)
            tc.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(9))
            tc.b_dec_in.normal_(0, 0.1, generator=torch.Generator().manual_seed(8))  # as a loaded file may carry
            if skip:
                tc.W_skip.normal_(0, 0.1, generator=torch.Generator().manual_seed(7))
        out[layer] = tc
    return out


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_terms_sum_to_the_logit_difference_and_each_expansion_to_its_node(family: str) -> None:
    model = HookedModel(tiny_hf_model(family), None)
    trace = CircuitTrace(model, random_transcoders(model, layers=[0]), IDS)  # layer 1's MLP stays whole
    target = Target("logit", (5,), (7,), pos=-1)
    att = attribute(trace, target)
    with torch.no_grad():
        logits = model(IDS)[0, -1].double()
    assert att.value == pytest.approx(float(logits[5] - logits[7]), abs=1e-6)
    assert abs(att.remainder) < 1e-5 * max(1.0, abs(att.value))
    kinds = att.by_kind()
    assert {"embed", "feature", "head", "error", "mlp", "attn_bias", "dict_bias", "target_bias"} <= set(kinds)
    assert abs(kinds["error"]) > 1e-3  # random transcoders: the error term carries real weight
    probe, _ = root_probe(trace, target)
    for kind in ("feature", "head"):
        node, value = max((t for t in att.terms if t[0].kind == kind), key=lambda t: abs(t[1]))
        child = trace.expand(node, probe)
        assert trace.value(child) == pytest.approx(value, rel=1e-6, abs=1e-9)
        assert sum(v for _, v in trace.children(child)) == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_feature_target_value_is_the_pre_activation() -> None:
    model = HookedModel(tiny_hf_model("gpt2"), None)
    tcs = random_transcoders(model)
    trace = CircuitTrace(model, tcs, IDS)
    _, cache = model.run_with_cache(IDS, names=["blocks.1.ln2.hook_normalized"])
    with torch.no_grad():
        pre = tcs[1].encode_pre(cache["blocks.1.ln2.hook_normalized"][0, 4])
    f = int(pre.argmax())
    att = attribute(trace, Target("feature", layer=1, feature=f, pos=4))
    assert att.value == pytest.approx(float(pre[f]), rel=1e-6)
    assert sum(v for _, v in att.terms) == pytest.approx(att.value, rel=1e-5)
    assert all(n.pos == 4 or n.kind == "head" for n, _ in att.terms)
    assert {n.layer for n, _ in att.terms if n.kind == "feature"} == {0}  # only earlier layers' features


def test_skip_transcoders_add_a_skip_term() -> None:
    model = HookedModel(tiny_hf_model("gpt2"), None)
    trace = CircuitTrace(model, random_transcoders(model, skip=True), IDS)
    att = attribute(trace, Target("logit", (5,), (7,), pos=3))
    skips = [v for n, v in att.terms if n.kind == "skip"]
    assert len(skips) == 2 and all(abs(v) > 1e-4 for v in skips)
    assert abs(att.remainder) < 1e-5 * max(1.0, abs(att.value))


def test_search_beam_and_branches() -> None:
    model = HookedModel(tiny_hf_model("gpt2"), None)
    trace = CircuitTrace(model, random_transcoders(model), IDS)
    probe, _ = root_probe(trace, Target("logit", (5,), (7,)))
    search = find_paths(trace, probe, n_iters=3, branches=2, beam=3)
    lengths = [len(p.nodes) for p in search.paths]
    assert lengths == sorted(lengths) and max(lengths) <= 4 and lengths.count(2) == 2  # 1 root × 2 branches
    assert all(lengths.count(n) <= 3 for n in (3, 4))
    with pytest.raises(InputError, match=r"^n_iters: expected a positive integer, got 0$"):
        find_paths(trace, probe, n_iters=0)


def test_targets_parse_and_refuse() -> None:
    model = tiny_hooked_with_tokenizer()
    t = parse_target("logit:40-20", model)
    assert t.kind == "logit" and len(t.plus) == 1 and len(t.minus) == 1
    assert parse_target("logit:#3,#4-#5", model).plus == (3, 4)
    assert parse_target("feature:1:7", model) == Target("feature", layer=1, feature=7, pos=-1, label="feature:1:7")
    gt = greater_than_target(model, 32)
    assert len(gt.plus) == 67 and len(gt.minus) == 33 and parse_target("greater-than:32", model) == gt
    assert gt.minus[-1] == model.tokenizer("32", add_special_tokens=False)["input_ids"][0]
    vocab = model.cfg.d_vocab
    kinds = "expected logit:A, logit:A-B, logit:A,B-C,D, feature:L:F or greater-than:YY"
    for bad, msg in [("logit:", f"target: 'logit:': {kinds}"), ("feature:9:1", "target: layer 9 is outside 0..1"),
                     ("feature:x", "target: 'feature:x': expected feature:LAYER:FEATURE with two integers"),
                     ("neuron:1", f"target: 'neuron:1': {kinds}"),
                     ("logit:#99999", f"target: token id 99999 is outside the vocabulary (0..{vocab - 1})"),
                     ("logit:the year", "target: 'the year' is not a single known token"),
                     ("greater-than:99", "target: greater-than:YY needs YY in 0..98, got 99")]:
        with pytest.raises(InputError, match="^" + re.escape(msg)):
            parse_target(bad, model)


def test_trace_circuit_end_to_end(tmp_path: Path) -> None:
    model = tiny_hooked_with_tokenizer()
    tcs = random_transcoders(model)
    target = parse_target("logit:40-20", model)
    result = trace_circuit(model, tcs, PROMPT_GT, target, n_iters=3, branches=6,
                           beam=30, threshold=0.0)
    g = result.graph
    assert g.nodes["target@" + str(len(result.tokens) - 1)]["value"] == pytest.approx(result.attribution.value)
    for node_id, node in g.nodes.items():
        if node["expanded"]:
            assert sum(g.in_edges(node_id).values()) == pytest.approx(node["traced"], rel=1e-5, abs=1e-7)
    rec = result.recovery
    assert rec is not None and rec.clean == pytest.approx(result.attribution.value, rel=1e-5)
    assert rec.n_features == len(g.features()) > 0
    active = [(layer, f, p) for layer, z in CircuitTrace(model, tcs, PROMPT_GT).z.items()
              for p, f in z.nonzero().tolist()]
    full = recovery(model, tcs, PROMPT_GT, target, active)  # errors frozen at their clean values
    assert full.circuit == pytest.approx(full.clean, rel=1e-5) and full.recovered == pytest.approx(1.0, rel=1e-4)
    assert abs(full.none - full.clean) > 1e-3  # the features matter; the frozen errors do not undo that
    assert full.circuit_frozen == pytest.approx(full.clean, rel=1e-5)
    feats = result.features
    assert [f["value"] for f in feats] == sorted((f["value"] for f in feats), key=abs, reverse=True)
    assert {f["id"] for f in feats} <= {n for n, d in g.nodes.items() if d["kind"] == "feature"}
    top = feats[0]
    # the encoder read through its GPT-2 LayerNorm by hand: gain in, then centred over d_model
    gain = model.adapter.blocks()[top["layer"]].ln_2.weight.detach().double()
    w = gain * tcs[top["layer"]].W_enc.detach().double()[:, top["index"]]
    scores = model.W_E.detach().double() @ (w - w.mean())
    best = scores.topk(6)
    assert [t for t, _ in top["de_embedding"]] == [model.tokenizer.decode([int(i)]) for i in best.indices]
    assert [v for _, v in top["de_embedding"]] == pytest.approx(best.values.tolist(), rel=1e-6)
    result.save(tmp_path)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["graph"] == json.loads((tmp_path / "graph.json").read_text())
    assert saved["paths"][0]["label"].startswith("target") and saved["seconds"]["build"] > 0
    with pytest.raises(InputError, match=r"result\.json: already exists; pass --overwrite"):
        result.save(tmp_path)
    with pytest.raises(InputError, match=r"^target: no transcoder for layer 1$"):
        trace_circuit(model, {0: tcs[0]}, "the year", Target("feature", layer=1, feature=0))


def test_ov_de_embedding_by_hand() -> None:
    model = tiny_hooked_with_tokenizer()
    tc = random_transcoders(model)[1]
    top = ov_de_embedding(model, tc, 3, layer=0, head=2, k=4, fold=False)  # folded by hand: test_folding.py
    scores = model.W_E @ model.W_V[0, 2] @ model.W_O[0, 2] @ tc.W_enc[:, 3].detach()
    best = scores.topk(4)
    assert [t for t, _ in top] == [model.tokenizer.decode([int(i)]) for i in best.indices]
    assert [v for _, v in top] == pytest.approx(best.values.tolist(), rel=1e-5)
    with pytest.raises(InputError, match=re.escape("head: (0, 99) is outside the model's 2 layers x 4 heads")):
        ov_de_embedding(model, tc, 3, layer=0, head=99)


def test_families_with_post_attention_norms_are_refused() -> None:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=8, intermediate_size=48, vocab_size=61, max_position_embeddings=64)
    model = HookedModel(Gemma3ForCausalLM(cfg).eval())
    refused = r"^model: \S+ puts a norm after each attention output, which circuit traces do not linearise"
    with pytest.raises(InputError, match=refused):
        CircuitTrace(model, {}, IDS)
