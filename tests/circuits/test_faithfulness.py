"""Faithfulness scores on the planted circuit equal their closed forms.

With error gain E, b at position 2 (value V = r + 2h + e) is fed by a@2 through the residual stream (r), by
a@0 and a@2 through head 1.0 (h each) and by transcoder 0's error at position 2 (e); r, h, e come from
`planted.by_hand`, computed from the weights. The graph's normalised matrix N then has one row with several
inputs (the target: r/V, h/V, h/V, e/V) and rows with one input each, so circuit-tracer's influence and its
replacement and completeness scores are fractions of r, h and e worked out below.
"""

from __future__ import annotations

import pytest
import torch
from planted import (
    O_GAIN,
    OTHER,
    PROMPT,
    TRIG,
    TRIG_SCALE,
    V_GAIN,
    W_HEAD,
    W_IN,
    W_OUT,
    W_RES,
    by_hand,
    d0,
    d1,
    d2,
    d4,
    planted,
    sigma,
)

from lmscope.circuits import (
    CircuitTrace,
    Target,
    build_graph,
    find_paths,
    graph_scores,
    heldout_recovery,
    recovery,
    root_probe,
    trace_circuit,
)
from lmscope.circuits.faithfulness import UNDER_HALF, HeldoutCase, influence, moved, under_half
from lmscope.circuits.graph import CircuitGraph

TARGET = Target("feature", layer=1, feature=0, pos=2)
E = 1.0  # r, h, e = 0.43, 0.085, 0.40 of V: a threshold of 0.2 prunes the head routes and keeps the rest


def _graph(error_gain: float, threshold: float, n_iters: int = 3) -> CircuitGraph:
    model, tcs = planted(error_gain)
    trace = CircuitTrace(model, tcs, PROMPT)
    probe, _ = root_probe(trace, TARGET)
    search = find_paths(trace, probe, n_iters=n_iters, branches=4, beam=10, min_abs=1e-6)
    return build_graph(search, ["T", "O", "T"], threshold=threshold)


def test_influence_is_the_power_series() -> None:
    N = torch.tensor([[0, 0.25, 0.75], [0, 0, 1.0], [0, 0, 0]], dtype=torch.float64)
    w = torch.tensor([1.0, 0, 0], dtype=torch.float64)
    assert influence(N, w).tolist() == pytest.approx([0, 0.25, 0.75 + 0.25])  # one step, then two
    with pytest.raises(RuntimeError, match=r"^influence: the graph has a cycle$"):
        influence(torch.tensor([[0, 1.0], [1.0, 0]], dtype=torch.float64), torch.tensor([1.0, 0], dtype=torch.float64))


def test_full_graph_scores_equal_the_closed_form() -> None:
    hand = by_hand(E)
    r, h, e = hand["residual"], hand["head"], hand["error"]
    g = _graph(E, threshold=0.0)
    assert set(g.nodes) == {"target@2", "L0.f0@0", "L0.f0@2", "H1.0@2<-0", "H1.0@2<-2", "error:L0@2", "embed@0",
                            "embed@2"}
    assert g.edges[("error:L0@2", "target@2")] == pytest.approx(e, rel=1e-6)
    s = graph_scores(g)
    # influence: a@2 (r+h)/V, a@0 h/V, each head h/V, error e/V, embed@2 (r+h)/V, embed@0 h/V
    assert s.replacement == pytest.approx((r + 2 * h) / (r + 2 * h + e), rel=1e-6)
    # every row but the target's has no error input; the target's non-error share is (r+2h)/V, weight 1;
    # Σ(I + w) = 1 + (2r + 6h + e)/V
    assert s.completeness == pytest.approx((3 * r + 8 * h + e) / (3 * r + 8 * h + 2 * e), rel=1e-6)
    assert s.replacement_strict == pytest.approx(s.replacement) and s.completeness_strict == pytest.approx(
        s.completeness)
    V = r + 2 * h + e
    assert s.sources == pytest.approx({"tokens": (r + 2 * h) / V, "errors": e / V, "rest": 0.0, "unexpanded": 0.0},
                                      abs=1e-6)
    exact = graph_scores(_graph(0.0, threshold=0.0))  # no error at all: everything flows through features
    assert (exact.replacement, exact.completeness) == (pytest.approx(1.0), pytest.approx(1.0))


def test_pruned_graph_scores_as_shown_and_strict() -> None:
    hand = by_hand(E)
    r, h, e = hand["residual"], hand["head"], hand["error"]
    V = r + 2 * h + e
    g = _graph(E, threshold=0.2)  # the head routes (h/V = 0.085) go into the target's rest
    assert set(g.nodes) == {"target@2", "L0.f0@2", "error:L0@2", "embed@2", "rest>target@2"}
    assert g.edges[("rest>target@2", "target@2")] == pytest.approx(2 * h, rel=1e-5)
    s = graph_scores(g)
    # as shown (rest dropped): target row a@2 r/(r+e), error e/(r+e); a@2 <- embed@2
    assert s.replacement == pytest.approx(r / (r + e), rel=1e-5)
    assert s.completeness == pytest.approx((3 * r + e) / (3 * r + 2 * e), rel=1e-5)
    # strict (rest is error): target row a@2 r/V, error e/V, rest 2h/V
    assert s.replacement_strict == pytest.approx(r / V, rel=1e-5)
    assert s.completeness_strict == pytest.approx((3 * r + 2 * h + e) / (3 * r + 4 * h + 2 * e), rel=1e-5)
    assert s.sources == pytest.approx({"tokens": r / V, "errors": e / V, "rest": 2 * h / V, "unexpanded": 0.0},
                                      rel=1e-5)


def test_unexpanded_nodes_count_against_the_strict_score() -> None:
    hand = by_hand(E)
    r, h, e = hand["residual"], hand["head"], hand["error"]
    V = r + 2 * h + e
    s = graph_scores(_graph(E, threshold=0.0, n_iters=1))  # one step: a@2 and the heads are not expanded
    assert s.replacement == 0.0 and s.replacement_strict == 0.0  # no influence reaches a token
    assert s.sources == pytest.approx({"tokens": 0.0, "errors": e / V, "rest": 0.0, "unexpanded": (r + 2 * h) / V},
                                      rel=1e-6)
    assert s.completeness == pytest.approx((1 - e / V + 1) / 2, rel=1e-6)  # Σ(I + w) = 1 + 1


def test_fraction_recovered_by_the_planted_circuit() -> None:
    hand = by_hand(E)
    r, h, e = hand["residual"], hand["head"], hand["error"]
    model, tcs = planted(E)
    full = recovery(model, tcs, PROMPT, TARGET, [(0, 0, 0), (0, 0, 2)])  # the graph's features: all of a
    assert full.recovered == pytest.approx(1.0) and full.recovered_frozen == pytest.approx(1.0)
    assert full.clean == pytest.approx(hand["value"], rel=1e-6)
    assert full.none_frozen == pytest.approx(e, rel=1e-5)  # the frozen error is all that is left
    assert full.none == pytest.approx(hand["none_live"], rel=1e-5)  # live: the error alone, renormalised
    partial = recovery(model, tcs, PROMPT, TARGET, [(0, 0, 2)], without=False)
    assert partial.recovered_frozen == pytest.approx((r + h) / (r + 2 * h), rel=1e-5)
    assert partial.without is None and partial.without_frozen is None


def _share(n_pos: int) -> float:
    """The frozen fraction recovered with a kept at the last trigger only, in a prompt of `n_pos` tokens whose
    last two triggers feed b: (W_RES + c/n) / (W_RES + 2c/n), c the head route's gain over the residual one's."""
    x = TRIG_SCALE * d1 + d0
    z_a = W_IN * TRIG_SCALE / sigma(x)
    c = V_GAIN * O_GAIN * W_HEAD / sigma(x + z_a * W_OUT * d2 + z_a * E * d4)
    return (W_RES + c / n_pos) / (W_RES + 2 * c / n_pos)


def test_heldout_recovery_moves_features_with_the_target() -> None:
    assert moved([(0, 1, 0), (0, 1, 2)], anchor=2, pos=1, n_pos=2) == ([(0, 1, 1)], 1)
    assert moved([(0, 1, 0), (0, 1, 2)], anchor=2, pos=3, n_pos=5) == ([(0, 1, 1), (0, 1, 3)], 0)
    model, tcs = planted(E)
    target = Target("feature", layer=1, feature=0, pos=-1)
    cases = [HeldoutCase(torch.tensor([[OTHER, TRIG, OTHER, TRIG]]), target),  # type: ignore[arg-type]
             HeldoutCase(torch.tensor([[OTHER, OTHER, TRIG, OTHER, TRIG]]), target),  # type: ignore[arg-type]
             HeldoutCase(PROMPT, target)]  # type: ignore[arg-type]
    held = heldout_recovery(model, tcs, [(0, 0, 2)], 2, cases, source="planted")
    got = [row["recovered_frozen"] for row in held.rows]
    assert got == pytest.approx([_share(4), _share(5), _share(3)], rel=1e-5)
    assert held.median_frozen == pytest.approx(_share(4), rel=1e-5) and held.verdict() is None
    assert [row["n_features"] for row in held.rows] == [1, 1, 1]
    everything = heldout_recovery(model, tcs, [(0, 0, 0), (0, 0, 2)], 2, cases[:1])  # a@1 and a@3: every trigger
    assert everything.rows[0]["n_dropped"] == 0 and everything.rows[0]["n_features"] == 2
    assert everything.median == pytest.approx(1.0) and everything.median_frozen == pytest.approx(1.0)
    short = heldout_recovery(model, tcs, [(0, 0, 0), (0, 0, 2)], 2,
                             [HeldoutCase(torch.tensor([[OTHER, TRIG]]), target)])  # type: ignore[arg-type]
    assert short.rows[0]["n_dropped"] == 1 and short.rows[0]["n_features"] == 1  # a@0 would move to -1
    assert short.median_frozen == pytest.approx(1.0)  # a@1 is the only trigger there
    nothing = heldout_recovery(model, tcs, [], 2, cases)
    assert nothing.median == pytest.approx(0.0, abs=1e-9) and nothing.verdict().startswith(UNDER_HALF)
    assert "live 0.00" in nothing.verdict() and "frozen 0.00" in nothing.verdict()


def test_under_half_labels_name_the_frame() -> None:
    assert under_half(0.7, 0.6, "x") is None and under_half(None, None, "x") is None
    assert under_half(0.3, 0.6, "held-out prompts") == f"{UNDER_HALF} on held-out prompts: live 0.30"


def test_trace_circuit_scores_every_graph_and_labels_it() -> None:
    model, tcs = planted(E)
    hand = by_hand(E)
    r, h, e = hand["residual"], hand["head"], hand["error"]
    result = trace_circuit(model, tcs, PROMPT, TARGET, n_iters=3, branches=4, beam=10, threshold=0.0,
                           heldout=[HeldoutCase(torch.tensor([[OTHER, TRIG, OTHER, TRIG]]),  # type: ignore[arg-type]
                                                Target("feature", layer=1, feature=0, pos=-1))],
                           heldout_source="by hand")
    assert result.scores is not None and result.scores.replacement == pytest.approx((r + 2 * h) / (r + 2 * h + e),
                                                                                    rel=1e-6)
    assert result.recovery is not None and result.recovery.recovered == pytest.approx(1.0)
    data = result.to_dict()
    assert data["scores"]["completeness"] == pytest.approx((3 * r + 8 * h + e) / (3 * r + 8 * h + 2 * e), rel=1e-6)
    assert data["heldout"]["n"] == 1 and data["heldout"]["source"] == "by hand" and data["labels"] == []
    assert data["heldout"]["median_recovered_frozen"] == pytest.approx(1.0)  # a@1 and a@3: every trigger kept
    assert result.seconds["build"] > 0 and "heldout" in result.seconds
    pruned = trace_circuit(model, tcs, PROMPT, TARGET, n_iters=1, branches=1, beam=1, threshold=0.0)
    # the top child alone is a@2 (r): its recovered fraction is (r + h)/(r + 2h) frozen, over one half
    assert pruned.recovery.recovered_frozen == pytest.approx((r + h) / (r + 2 * h), rel=1e-5)
    assert pruned.recovery.recovered > 0.5 and pruned.labels() == []
    empty = trace_circuit(model, tcs, PROMPT, TARGET, n_iters=1, branches=1, beam=1, threshold=0.9)
    assert empty.graph.features() == [] and empty.labels() == [f"{UNDER_HALF} on its own prompt: live 0.00, "
                                                                "frozen 0.00"]
    named = trace_circuit(model, tcs, PROMPT, TARGET, n_iters=1, branches=1, beam=1, threshold=0.0, check=False,
                          dictionaries={0: "tc0", 1: "tc1"})
    assert [str(u) for u in named.graph.units(["feature"])] == ["dict:tc0:0@2"]  # the top child, a@2, as a unit


def test_heldout_batches_equal_one_prompt_at_a_time() -> None:
    model, tcs = planted(E)
    feature = Target("feature", layer=1, feature=0, pos=-1)
    logit = Target("logit", (1,), (2,), pos=-1, label="logit:#1-#2")
    prompts = [torch.tensor([[OTHER, TRIG, OTHER, TRIG]]), torch.tensor([[TRIG, OTHER, OTHER, TRIG]]),
               torch.tensor([[TRIG, TRIG, OTHER, TRIG]])]
    cases = [HeldoutCase(p, t) for p, t in zip(prompts, [feature, logit, feature], strict=True)]  # type: ignore[arg-type]
    together = heldout_recovery(model, tcs, [(0, 0, 0), (0, 0, 2)], 2, cases, batch_size=2)  # one batch of 2, one of 1
    seen: list[tuple[int, int]] = []
    tokens = heldout_recovery(model, tcs, [(0, 0, 0), (0, 0, 2)], 2, cases, max_tokens=9,  # 9 tokens: 2 rows of 4
                              progress=lambda i, n: seen.append((i, n)))
    assert seen == [(2, 3), (3, 3)] and tokens.rows == together.rows
    for row, case in zip(together.rows, cases, strict=True):
        alone = recovery(model, tcs, case.prompt, case.target, [(0, 0, 1), (0, 0, 3)], without=False)
        for key in ("clean", "circuit", "none", "recovered", "circuit_frozen", "none_frozen", "recovered_frozen"):
            assert row[key] == pytest.approx(getattr(alone, key), rel=1e-5, abs=1e-7), key
    assert together.rows[1]["target"] == "logit:#1-#2" and together.rows[2]["recovered_frozen"] < 1  # a@0 not kept


def test_a_graph_of_errors_alone_scores_circuit_tracers_floor() -> None:
    nodes = [{"id": "target@3", "kind": "target"}, {"id": "error:L1@3", "kind": "error"},
             {"id": "error:L0@3", "kind": "error"}, {"id": "dict_bias:L1@3", "kind": "dict_bias"}]
    g = CircuitGraph.from_dict({"target": "target@3", "target_value": 2.0, "threshold": 0.0, "nodes": nodes,
                                "edges": [{"source": "error:L1@3", "target": "target@3", "value": 3.0},
                                          {"source": "error:L0@3", "target": "target@3", "value": -1.5},
                                          {"source": "dict_bias:L1@3", "target": "target@3", "value": 0.5}]})
    s = graph_scores(g)  # the bias is a constant, not an input: the target's inputs are 2/3 and 1/3 error
    assert s.replacement == 0.0 and s.completeness == pytest.approx(0.5)  # (0 · 1 + (2/3 + 1/3) · 1) / 2
    assert s.sources == {"tokens": 0.0, "errors": 1.0, "rest": 0.0, "unexpanded": 0.0}
