"""Autointerp on the user's text: token records, attention-sink positions left out, planted units explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmscope import HookedModel
from lmscope.autointerp import RecordConfig, score_texts, text_activations, token_string
from lmscope.dictionary.positions import PositionRule
from lmscope.errors import InputError
from tiny_models import tiny_hooked_with_tokenizer

POINT = "blocks.0.hook_resid_pre"
SINK, CUE = 5, 7  # dimensions of the embedding planted on BOS and on " Monday"
SMALL = RecordConfig(n_top_explain=4, n_top_score=4, n_random=4, n_quantiles=2, n_per_quantile=1, n_nonactivating=4)
TEXTS = [f"on {day} the {thing} was {how}" for day, thing, how in
         [("Monday", "shop", "open"), ("Friday", "road", "closed"), ("Monday", "sky", "grey"),
          ("Sunday", "bus", "late"), ("Monday", "cafe", "busy"), ("Tuesday", "lake", "cold")] * 4] + ["ok"]


def planted(prepend_bos: bool) -> HookedModel:
    """A tiny GPT-2 whose residual stream (blocks.0.hook_resid_pre) is 1000 on dim SINK at BOS and 50 on dim CUE
    at ' Monday': if the BOS position were a row, it would be every record's top activation of unit SINK."""
    tiny = tiny_hooked_with_tokenizer(300)
    m = HookedModel(tiny.hf, tiny.tokenizer, prepend_bos=prepend_bos)
    cue = m.tokenizer(" Monday")["input_ids"]
    assert len(cue) == 1
    with torch.no_grad():
        m.hf.transformer.wte.weight[m.tokenizer.bos_token_id, SINK] = 1000.0
        m.hf.transformer.wte.weight[cue[0], CUE] = 50.0
    return m


@pytest.mark.parametrize(("prepend_bos", "exclude_first"), [(True, 0), (True, 1), (False, 0), (False, 2)])
def test_records_are_the_tokens_the_rule_keeps(prepend_bos: bool, exclude_first: int) -> None:
    m = planted(prepend_bos)
    rule = PositionRule.for_model(m, exclude_first)
    data = text_activations(m, TEXTS, {POINT: [SINK, CUE]}, rule=rule, batch_size=5)
    lead = exclude_first  # text tokens left out at the start of every record (BOS is never a text token)
    ids = [m.tokenizer(t)["input_ids"] for t in TEXTS]
    assert data.text_index == [i for i in range(len(TEXTS)) if len(ids[i]) > lead]
    assert data.n_positions == sum(len(x) + prepend_bos for x in ids)
    assert data.n_rows == sum(max(len(x) - lead, 0) for x in ids) == data.acts[POINT].shape[0]
    offset = 0
    for words, i in zip(data.contexts, data.text_index, strict=True):
        assert words == [token_string(m.tokenizer.decode([t])) for t in ids[i][lead:]]
        _, cache = m.run_with_cache(TEXTS[i], names=[POINT])  # the text alone, unpadded
        start = int(prepend_bos) + lead
        expected = cache[POINT][0, start:, [SINK, CUE]]
        assert torch.allclose(data.acts[POINT][offset: offset + len(words)], expected, atol=1e-5)
        offset += len(words)
    assert float(data.acts[POINT][:, 0].max()) < 10  # the planted BOS value (1000) is never a row
    assert "<|endoftext|>" not in {w for c in data.contexts for w in c}


class Recording:
    """The offline explainer, remembering every record it was shown."""

    name = "recording"

    def __init__(self) -> None:
        from lmscope.autointerp import OfflineExplainer

        self.inner = OfflineExplainer()
        self.seen: list[tuple[str, ...]] = []

    def explain(self, records, max_activation):  # type: ignore[no-untyped-def]
        self.seen.extend(r.words for r in records)
        return self.inner.explain(records, max_activation)


def test_score_texts_explains_the_planted_token_and_never_sees_bos() -> None:
    m = planted(True)
    explainer = Recording()
    result = score_texts(m, TEXTS, points=[POINT], units_per_point=None, cfg=SMALL, explainer=explainer,
                         source="mine.txt", model_name="tiny")
    by_unit = {u["unit"]: u for u in result.units}
    cue = by_unit[f"{POINT}:{CUE}"]
    assert "Monday" in cue["explanation"]["terms"] and cue["top_and_random"] > 0.99
    assert by_unit[f"{POINT}:{SINK}"]["max_activation"] < 10  # BOS (1000) left out of every record
    assert explainer.seen and all("<|endoftext|>" not in words for words in explainer.seen)
    assert len(result.units) == m.cfg.d_model and result.source == "mine.txt" and result.model == "tiny"
    positions = result.config["positions"]
    assert positions["rows"] == "tokens" and positions["prepend_bos"] is True and positions["exclude_first"] == 0
    assert positions["n_rows"] == sum(len(m.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert result.summary["all"]["best_iou"]["mean"] is None  # no labels on the user's text


def test_score_texts_on_a_dictionary_uses_its_rule_and_names_features() -> None:
    from lmscope.dictionary import DictConfig, Dictionary

    m = planted(True)
    d = Dictionary(DictConfig(kind="sae", d_in=32, d_sae=12, hook_name=POINT))
    with torch.no_grad():  # feature f reads dimension f of the residual: feature CUE is the planted cue
        d.W_enc.zero_()
        d.W_enc[torch.arange(12), torch.arange(12)] = 1.0
        d.b_enc.zero_()
        d.b_dec.zero_()
    result = score_texts(m, TEXTS, dictionary=d, dictionary_path="sae", units_per_point=None, exclude_first=1,
                         cfg=SMALL)
    by_unit = {u["unit"]: u for u in result.units}
    assert set(by_unit) == {f"dict:sae:{j}" for j in range(12)}
    assert "Monday" in by_unit[f"dict:sae:{CUE}"]["explanation"]["terms"]
    assert result.config["positions"]["exclude_first"] == 1
    assert result.config["positions"]["n_rows"] == sum(len(m.tokenizer(t)["input_ids"]) - 1 for t in TEXTS[:-1])


def test_bad_inputs_are_refused() -> None:
    from lmscope.dictionary import DictConfig, Dictionary

    m = planted(False)
    with pytest.raises(InputError, match=r"^points: name the hook points to score \(e\.g\. "
                                          r"blocks\.3\.mlp\.hook_post\), or give a dictionary to score its "
                                          r"features$"):
        score_texts(m, TEXTS)
    with pytest.raises(InputError, match=r"^points: blocks\.0\.attn\.hook_pattern is an attention pattern"):
        score_texts(m, TEXTS, points=["blocks.0.attn.hook_pattern"])
    with pytest.raises(InputError, match=r"^units_per_point: expected a positive integer, got 0$"):
        score_texts(m, TEXTS, points=[POINT], units_per_point=0)
    with pytest.raises(InputError, match=r"^texts: no token left"):
        score_texts(m, ["ok"], points=[POINT], exclude_first=3)
    wide = Dictionary(DictConfig(kind="sae", d_in=64, d_sae=8, hook_name=POINT))
    with pytest.raises(InputError, match=r"^dictionary: the dictionary reads 64 dimensions"):
        score_texts(m, TEXTS, dictionary=wide)


def test_token_strings_have_no_whitespace() -> None:
    assert [token_string(t) for t in (" the", "\n", " ", "a b", "\t\t", "")] == ["the", "↵", "␣", "a␣b", "⇥⇥", "∅"]
    assert np.all([" " not in token_string(t) for t in (" x ", "  ", "\r\n")])
