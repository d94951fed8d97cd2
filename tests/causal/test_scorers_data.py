"""Outcome scorers, topic inference, the topic-confounded mediation rows and result files."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lmscope.causal.confounders import mean_pooled, topics_kmeans, topics_nmf
from lmscope.causal.data import DETERMINERS, topic_mediation_rows
from lmscope.causal.scorers import (
    HFClassifierScorer,
    callable_outcome,
    greedy_lexicon_rate,
    lexicon_hit,
    lexicon_mass,
    logit_diff,
    target_prob,
    word_token_ids,
)
from lmscope.data.topics import TOXIC_WORDS
from lmscope.errors import InputError
from tiny_models import tiny_hooked_with_tokenizer


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return tiny_hooked_with_tokenizer(400)


def test_logit_scorers(model) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, len(model.tokenizer), generator=g)
    index = torch.arange(3)
    ids = word_token_ids(model, TOXIC_WORDS)
    assert len(ids) >= 4
    mass = lexicon_mass(model)(logits, index)
    torch.testing.assert_close(mass, logits.softmax(-1)[:, ids].sum(-1))
    torch.testing.assert_close(lexicon_mass(model, log=True)(logits, index), mass.log())
    logits[1, ids[0]] = 100.0
    assert lexicon_hit(model)(logits, index).tolist() == [0.0, 1.0, 0.0]
    a, b = model.tokenizer(" senator")["input_ids"][0], model.tokenizer(" soup")["input_ids"][0]
    torch.testing.assert_close(logit_diff(model, " senator", " soup")(logits, index), logits[:, a] - logits[:, b])
    per_row = logit_diff(model, [a, b, a], [b, a, b])(logits, index)  # one target per base row
    torch.testing.assert_close(per_row, torch.stack([logits[0, a] - logits[0, b], logits[1, b] - logits[1, a],
                                                     logits[2, a] - logits[2, b]]))
    torch.testing.assert_close(target_prob(model, a)(logits, index), logits.softmax(-1)[:, a])
    with pytest.raises(InputError, match=r"^target 'the senator voted': expected a single token, got 3 tokens$"):
        target_prob(model, "the senator voted")
    with pytest.raises(InputError, match=r"^outcome: expected one value per row \(\(3,\)\), got \(\)$"):
        callable_outcome(lambda out, idx: out.sum())(logits, index)
    torch.testing.assert_close(callable_outcome(lambda out, idx: out[:, 0])(logits, index), logits[:, 0])


def test_greedy_lexicon_rate_matches_step_by_step_generation(model) -> None:  # type: ignore[no-untyped-def]
    ids = set(word_token_ids(model, ["senator", "soup", "the"]).tolist())
    texts = ["the senator voted", "the soup"]
    rates = greedy_lexicon_rate(model, texts, ["senator", "soup", "the"], n_tokens=4)
    for text, rate in zip(texts, rates.tolist(), strict=True):
        x = model.to_tokens(text).input_ids
        hits = 0
        for _ in range(4):
            nxt = model(x)[0, -1].argmax()
            hits += int(nxt) in ids
            x = torch.cat([x, nxt.view(1, 1)], 1)
        assert rate == hits / 4


def test_hf_classifier_scorer(tmp_path, model) -> None:  # type: ignore[no-untyped-def]
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    clf = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(model.tokenizer),
                                                   num_labels=2, pad_token_id=0)).eval()
    clf.save_pretrained(tmp_path / "clf")
    model.tokenizer.save_pretrained(tmp_path / "clf")
    probs = HFClassifierScorer(str(tmp_path / "clf"), label=1)(["the senator voted", "a storm"])
    enc = model.tokenizer(["the senator voted", "a storm"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = clf(**enc).logits.softmax(-1)[:, 1]
    torch.testing.assert_close(probs, expected)
    missing = re.escape(f"{tmp_path / 'missing'}: not a local HF sequence classifier (")
    with pytest.raises(InputError, match="^" + missing):
        HFClassifierScorer(str(tmp_path / "missing"))(["x"])


def test_topic_rows_are_confounded_and_cut_at_a_determiner() -> None:
    rows = topic_mediation_rows(400, seed=0)
    assert len(rows) == 400
    for r in rows:
        words = r["text"].split(" ")
        assert words[-1] in DETERMINERS
        assert r["toxic_cue"] == int(any(w in TOXIC_WORDS for w in words))
    rate = {t: sum(r["toxic_cue"] for r in rows if r["topic"] == t) / sum(r["topic"] == t for r in rows)
            for t in ("politics", "cooking")}
    assert rate["politics"] > 3 * rate["cooking"]
    capped = topic_mediation_rows(100, seed=0, max_per_cell=5)
    assert max(sum((r["topic"], r["toxic_cue"]) == (t, c) for r in capped)
               for t in ("politics", "sports") for c in (0, 1)) == 5


def test_topic_inference(model) -> None:  # type: ignore[no-untyped-def]
    from sklearn.metrics import adjusted_rand_score

    rows = topic_mediation_rows(120, seed=3)
    texts, truth = [r["text"] for r in rows], [r["topic"] for r in rows]
    nmf = topics_nmf(texts, 4)
    assert nmf.features.shape == (120, 4) and nmf.method == "nmf"
    assert adjusted_rand_score(truth, nmf.labels) > 0.5
    pooled = mean_pooled(model, texts[:5], "blocks.1.hook_resid_post", batch_size=2)
    for i in range(5):  # the mean over real tokens only, whatever the padding
        _, cache = model.run_with_cache(texts[i], names=["blocks.1.hook_resid_post"])
        torch.testing.assert_close(pooled[i], cache["blocks.1.hook_resid_post"][0].mean(0), atol=1e-5, rtol=0)
    km = topics_kmeans(model, texts, 4, seed=0)
    assert sorted(set(km.labels)) == [0, 1, 2, 3] and km.features.shape == (120, 4)
    assert all(int(km.features[i].argmin()) == km.labels[i] for i in range(120))  # nearest centroid
    with pytest.raises(InputError, match=r"^n_topics: expected at least 2, got 1$"):
        topics_nmf(texts, 1)


def test_results_save_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lmscope.causal import mediate
    from lmscope.causal.scm import scm_data, scm_model

    x, t, c = scm_data(60)
    result = mediate(scm_model(), x, t, c, ["m"], lambda out, idx: out, n_boot=20)
    path = result.save(tmp_path)
    data = json.loads(path.read_text())
    assert set(data["effects"]) == {"unadjusted", "stratified", "entropy_balancing"}
    row = data["per_component"]["stratified"][0]
    assert row["component"] == "m" and len(row["nie_ci"]) == 2 and row["te_ci"][0] <= row["te"] <= row["te_ci"][1]
    exists = re.escape(f"{tmp_path / 'result.json'}: already exists; pass --overwrite")
    with pytest.raises(InputError, match="^" + exists):
        result.save(tmp_path)
    with pytest.raises(InputError, match=r"^scheme 'bogus': expected one of unadjusted, stratified, "
                                         r"entropy_balancing$"):
        result.nie("bogus")
