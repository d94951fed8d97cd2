"""The planted circuit: a at layer 0 feeds b at layer 1 through the residual stream and through head 1.0.

Expected values are computed here by hand from the planted weights (residuals built from the
directions, LayerNorm scales from their variance), not read back from the model.
"""

from __future__ import annotations

import re

import pytest
import torch
from planted import (
    OTHER,
    PROMPT,
    TRIG_SCALE,
    W_IN,
    W_OUT,
    W_RES,
    by_hand,
    planted,
)

from lmscope.circuits import (
    CircuitTrace,
    Node,
    Target,
    attribute,
    build_graph,
    connection,
    connections,
    de_embedding_scores,
    find_paths,
    recovery,
    root_probe,
    top_connections,
)
from lmscope.errors import InputError
from lmscope.model.interventions import ZeroAblation

TARGET = Target("feature", layer=1, feature=0, pos=2)  # b at the last position


@pytest.fixture(scope="module")
def trace() -> CircuitTrace:
    model, tcs = planted()
    return CircuitTrace(model, tcs, PROMPT)


def test_attributions_equal_the_planted_products(trace: CircuitTrace) -> None:
    hand = by_hand()
    assert trace.z[0][[0, 2], 0].tolist() == pytest.approx([hand["z_a"]] * 2, rel=1e-6)
    assert trace.z[0][1].abs().max() == 0  # a fires on triggers only
    att = attribute(trace, TARGET)
    terms = {n.id: v for n, v in att.terms}
    assert att.value == pytest.approx(hand["value"], rel=1e-6)
    assert terms["L0.f0@2"] == pytest.approx(hand["residual"], rel=1e-6)
    assert terms["H1.0@2<-0"] == pytest.approx(hand["head"], rel=1e-6)
    assert terms["H1.0@2<-2"] == pytest.approx(hand["head"], rel=1e-6)
    others = [abs(v) for k, v in terms.items() if k not in ("L0.f0@2", "H1.0@2<-0", "H1.0@2<-2")]
    assert max(others) < 1e-6  # errors, biases, embedding, the other head, OTHER's source: nothing
    assert terms["error:L0@2"] == 0  # the MLPs are the transcoders
    # attributions plus error and bias terms add up to the target's value
    assert sum(terms.values()) == pytest.approx(att.value, abs=1e-6) and abs(att.remainder) < 1e-6


def test_path_search_returns_exactly_the_planted_paths(trace: CircuitTrace) -> None:
    probe, _ = root_probe(trace, TARGET)
    search = find_paths(trace, probe, n_iters=3, branches=3, beam=10, min_abs=1e-6)
    got = {tuple(n.id for n in p.nodes) for p in search.paths}
    t, a0, a2, h0, h2 = "target@2", "L0.f0@0", "L0.f0@2", "H1.0@2<-0", "H1.0@2<-2"
    assert got == {(t, a2), (t, h0), (t, h2), (t, a2, "embed@2"), (t, h0, a0), (t, h2, a2),
                   (t, h0, a0, "embed@0"), (t, h2, a2, "embed@2")}
    hand = by_hand()
    values = {tuple(n.id for n in p.nodes): p.value for p in search.paths}
    assert values[(t, h0, a0, "embed@0")] == pytest.approx(hand["head"], rel=1e-6)  # a is all embedding
    assert search.top(1)[0].value == pytest.approx(hand["residual"], rel=1e-6)  # the residual route leads


def test_graph_merges_paths_and_prunes_into_rest(trace: CircuitTrace) -> None:
    probe, _ = root_probe(trace, TARGET)
    search = find_paths(trace, probe, n_iters=3, branches=3, beam=10, min_abs=1e-6)
    hand = by_hand()
    g = build_graph(search, ["T", "O", "T"], threshold=0.0)
    assert set(g.nodes) == {"target@2", "L0.f0@0", "L0.f0@2", "H1.0@2<-0", "H1.0@2<-2", "embed@0", "embed@2"}
    assert g.edges[("L0.f0@2", "target@2")] == pytest.approx(hand["residual"], rel=1e-6)
    assert g.edges[("L0.f0@2", "H1.0@2<-2")] == pytest.approx(hand["head"], rel=1e-6)
    assert g.nodes["L0.f0@2"]["value"] == pytest.approx(hand["residual"] + hand["head"], rel=1e-6)
    assert g.edges[("embed@2", "L0.f0@2")] == pytest.approx(hand["residual"] + hand["head"], rel=1e-6)
    for node_id, node in g.nodes.items():  # nothing hidden: in-edges add up to every expanded node
        if node["expanded"]:
            assert sum(g.in_edges(node_id).values()) == pytest.approx(node["traced"], rel=1e-6)
    assert g.features() == [(0, 0, 0), (0, 0, 2)]
    pruned = build_graph(search, ["T", "O", "T"], threshold=0.5)  # the head routes are 15% each
    assert set(pruned.edges) == {("L0.f0@2", "target@2"), ("embed@2", "L0.f0@2"), ("rest>target@2", "target@2")}
    assert pruned.edges[("rest>target@2", "target@2")] == pytest.approx(2 * hand["head"], rel=1e-5)
    assert pruned.features() == [(0, 0, 2)]
    assert type(g).from_dict(g.to_dict()).edges == g.edges


def test_input_invariant_connections_are_decoder_dot_encoder() -> None:
    model, tcs = planted()  # unit gains and mean-zero directions: folding the norms changes nothing here
    for fold in (True, False):
        assert connection(tcs[0], 0, tcs[1], 0, model=model, fold=fold) == pytest.approx(W_OUT * W_RES)
        full = connections(tcs[0], tcs[1], model=model, fold=fold)  # d2 · (W_RES d2 + W_HEAD d4)
        assert torch.allclose(full, (tcs[0].W_dec @ tcs[1].W_enc).double())
        assert top_connections(tcs[0], tcs[1], 0, k=1, model=model, fold=fold) == [(0, pytest.approx(W_OUT * W_RES))]
        scores = de_embedding_scores(model, tcs[0], 0, fold=fold)
        assert scores[1] == pytest.approx(TRIG_SCALE * W_IN) and scores[OTHER] == 0  # only the trigger drives a
    assert connection(tcs[0], 0, tcs[1], 0, fold=False) == pytest.approx(W_OUT * W_RES)  # raw: no model needed
    needs = re.escape("model: blocks.1.ln2.hook_normalized is a norm's output; folding its gain into the encoder needs "
                      "the model (pass model=..., or fold=False for the raw weights)")
    with pytest.raises(InputError, match=f"^{needs}$"):
        connection(tcs[0], 0, tcs[1], 0)  # folding a norm's gain without the model that has the norm


def test_recovery_keeps_features_per_position() -> None:
    model, tcs = planted()
    everything = [(0, 0, 0), (0, 0, 2), (1, 0, 0), (1, 0, 1), (1, 0, 2)]
    full = recovery(model, tcs, PROMPT, TARGET, everything)
    assert full.circuit == pytest.approx(full.clean) and full.recovered == pytest.approx(1.0)
    assert full.none == pytest.approx(0.0, abs=1e-6)  # without a, nothing reaches b
    partial = recovery(model, tcs, PROMPT, TARGET, [(0, 0, 2)])  # a kept at position 2 only

    def drop_a_at_0(out: torch.Tensor, *, hook: object) -> torch.Tensor:  # MLP 0 is feature a alone
        out = out.clone()
        out[0, 0] = 0
        return out

    _, cache = model.run_with_cache(PROMPT, names=["blocks.1.ln2.hook_normalized"],
                                    hooks=[("blocks.0.hook_mlp_out", drop_a_at_0)])
    _, clean_cache = model.run_with_cache(PROMPT, names=["blocks.1.ln2.hook_normalized"])
    with torch.no_grad():
        expected = float(tcs[1].encode_pre(cache["blocks.1.ln2.hook_normalized"][0, 2])[0])
        clean = float(tcs[1].encode_pre(clean_cache["blocks.1.ln2.hook_normalized"][0, 2])[0])
    assert partial.circuit == pytest.approx(expected, rel=1e-6)
    assert partial.clean == pytest.approx(clean, rel=1e-6)
    # (circuit - none) / (clean - none) with none = 0 (nothing reaches b without a): the share a at 2 alone gives
    assert partial.recovered == pytest.approx(expected / clean, rel=1e-5)
    assert abs(expected) > 1e-3 and abs(clean - expected) > 1e-3  # both positions of a carry some of b
    assert full.without == pytest.approx(full.none)  # keeping everything but the circuit keeps nothing here

    def drop_a_at_2(out: torch.Tensor, *, hook: object) -> torch.Tensor:
        out = out.clone()
        out[0, 2] = 0
        return out

    _, cache = model.run_with_cache(PROMPT, names=["blocks.1.ln2.hook_normalized"],
                                    hooks=[("blocks.0.hook_mlp_out", drop_a_at_2)])
    with torch.no_grad():
        expected = float(tcs[1].encode_pre(cache["blocks.1.ln2.hook_normalized"][0, 2])[0])
    assert partial.without == pytest.approx(expected, rel=1e-6)
    # frozen norms and patterns: removing a at 0 removes exactly the planted head route from position 0
    hand = by_hand()
    assert partial.none_frozen == pytest.approx(0.0, abs=1e-6) and full.circuit_frozen == pytest.approx(full.clean)
    assert partial.circuit_frozen == pytest.approx(hand["residual"] + hand["head"], rel=1e-5)
    assert partial.without_frozen == pytest.approx(hand["head"], rel=1e-5)
    assert partial.recovered_frozen == pytest.approx((hand["residual"] + hand["head"]) / hand["value"], rel=1e-5)


def test_graph_nodes_are_units_that_interventions_take() -> None:
    model, tcs = planted()
    trace = CircuitTrace(model, tcs, PROMPT)
    probe, _ = root_probe(trace, TARGET)
    search = find_paths(trace, probe, n_iters=3, branches=3, beam=10, min_abs=1e-6)
    g = build_graph(search, ["T", "O", "T"], dictionaries={0: "tc0", 1: "tc1"})
    assert g.nodes["L0.f0@2"]["unit"] == "dict:tc0:0@2" and g.nodes["H1.0@2<-0"]["unit"] == "blocks.1.attn:0@2"
    assert g.nodes["embed@0"]["unit"] == "blocks.0.hook_resid_pre@0" and g.nodes["target@2"]["unit"] is None
    assert str(Node("mlp", 1, pos=2).unit()) == "blocks.1.hook_mlp_out@2"  # a layer traced without a transcoder
    assert Node("error", 0, pos=2).unit() is None and Node("feature", 0, 3, 2).unit() is None  # no name: no unit
    assert sorted(map(str, g.units())) == ["blocks.1.attn:0@2", "dict:tc0:0@0", "dict:tc0:0@2"]
    for name, layer in (("tc0", 0), ("tc1", 1)):
        model.attach_dictionary(name, tcs[layer])
    b = "tc1.hook_sae_acts_post"
    hand = by_hand()
    _, clean = model.run_with_cache(PROMPT, names=[b])
    assert float(clean[b][0, 2, 0]) == pytest.approx(hand["value"], rel=1e-5)  # b's pre-activation, positive
    # the graph's features ablated: nothing reaches b (MLP 0 is feature a alone, and head 1.0 reads only a)
    _, ablated = model.run_with_cache(PROMPT, names=[b], hooks=ZeroAblation(g.units(["feature"])).hooks())
    assert float(ablated[b][0, 2, 0]) == pytest.approx(0.0, abs=1e-6)
    old = g.to_dict()
    del old["dictionaries"]
    for n in old["nodes"]:
        del n["unit"]
    legacy = type(g).from_dict(old)  # a graph saved before nodes were units
    assert sorted(map(str, legacy.units(["head"]))) == ["blocks.1.attn:0@2"]
    with pytest.raises(InputError, match=r"^graph: feature node L0\.f0@\d has no dictionary name for layer 0; "
                                         r"build the graph with dictionaries=\{layer: name\}"):
        legacy.units()
