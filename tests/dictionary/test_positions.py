"""Attention sinks left out by one rule (lmscope.dictionary.positions) in training rows, metrics, top examples,
the cfg.json record of the rule, and loss recovered reported as undefined where the ablation does not hurt."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.dictionary import DictConfig, Dictionary, Transcoder, load_dictionary, save_dictionary
from lmscope.dictionary.buffer import ActivationBuffer
from lmscope.dictionary.features import feature_reports
from lmscope.dictionary.positions import PositionRule, kept_positions, scored_positions
from lmscope.dictionary.report import dictionary_metrics
from lmscope.dictionary.splice import Splice, recovered_fraction, spliced_metrics
from lmscope.errors import InputError
from lmscope.model.inputs import TokenBatch
from tiny_models import tiny_hooked_with_tokenizer

IN, OUT, RESID_PRE = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", "blocks.0.hook_resid_pre"
TEXTS = [f"the cat number {i} sat on the mat and saw {i % 7} birds" for i in range(24)]


@pytest.fixture(scope="module")
def model() -> HookedModel:
    """A tiny random-init GPT-2 whose texts start with a BOS (asked for), so position 0 is the BOS."""
    m = tiny_hooked_with_tokenizer(300)
    m.prepend_bos = True
    return m


def _transcoder(model: HookedModel, exclude_first: int = 0) -> Dictionary:
    cfg = DictConfig(kind="transcoder", d_in=model.cfg.d_model, d_sae=48, hook_name=IN, hook_name_out=OUT,
                     prepend_bos=True, exclude_first=exclude_first)
    return Dictionary(cfg, generator=torch.Generator().manual_seed(1))


def test_kept_and_scored_positions_by_hand() -> None:
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    batch = TokenBatch(torch.zeros_like(mask), mask)
    assert kept_positions(batch, prepend_bos=False).tolist() == mask.bool().tolist()
    assert kept_positions(batch, prepend_bos=True).tolist() == [[False, True, True, True, True],
                                                                [False, True, True, False, False]]
    assert kept_positions(batch, prepend_bos=True, exclude_first=2).tolist() == [[False, False, False, True, True],
                                                                                 [False, False, False, False, False]]
    # a prediction at p counts when p is kept and p + 1 is real
    assert scored_positions(batch, prepend_bos=False, exclude_first=1).tolist() == [[False, True, True, True],
                                                                                    [False, True, False, False]]
    with pytest.raises(InputError, match=r"^exclude_first: expected a non-negative number of positions, got -1$"):
        kept_positions(batch, prepend_bos=True, exclude_first=-1)


def test_position_rule_records_and_describes_itself(model: HookedModel) -> None:
    rule = PositionRule(True, 2)
    assert rule.n_leading == 3
    assert rule.to_dict() == {"prepend_bos": True, "exclude_first": 2, "excluded_leading_positions": 3}
    assert rule.describe() == "left out: the BOS position and the first 2 text tokens"
    assert PositionRule(False).describe() == "no position left out (no BOS)"
    assert PositionRule.for_dictionary(model, _transcoder(model, 1)) == PositionRule(True, 1)  # recorded value
    assert PositionRule.for_dictionary(model, _transcoder(model, 1), exclude_first=0) == PositionRule(True, 0)
    with pytest.raises(InputError, match=r"^exclude_first: expected a non-negative number of positions, got True$"):
        PositionRule(True, True)  # type: ignore[arg-type]


def _all_rows(model: HookedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Every real row of TEXTS at IN and its position, one text at a time (no padding)."""
    rows, pos = [], []
    for t in TEXTS:
        x = model.run_with_cache(t, names=[IN])[1][IN][0]
        rows.append(x)
        pos.append(torch.arange(x.shape[0]))
    return torch.cat(rows), torch.cat(pos)


@pytest.mark.parametrize("exclude_first", [0, 1])
def test_buffer_never_serves_a_bos_or_excluded_row(model: HookedModel, exclude_first: int) -> None:
    rows, pos = _all_rows(model)
    bos_rows = rows[pos == 0]
    assert torch.allclose(bos_rows, bos_rows[0].expand_as(bos_rows), atol=1e-5)  # one BOS row, in every text
    n_kept = int((pos >= 1 + exclude_first).sum())
    buf = ActivationBuffer(model, TEXTS, [IN, OUT], buffer_tokens=2 * n_kept, batch_size=8, seed=0,
                           exclude_first=exclude_first)
    buf.configure(batch_size=n_kept // 2)
    it = iter(buf)
    served = torch.cat([next(it)[0] for _ in range(2)])
    it.close()
    nearest = torch.cdist(served, rows, compute_mode="donot_use_mm_for_euclid_dist").min(1)
    assert float(nearest.values.max()) < 1e-3  # each served row is a real row of the texts...
    assert bool((pos[nearest.indices] >= 1 + exclude_first).all())  # ...at a kept position, never the BOS
    assert float(torch.cdist(served, bos_rows[:1]).min()) > 1e-2


def test_fit_records_the_rule_and_a_text_with_nothing_left_is_refused(model: HookedModel) -> None:
    buf = ActivationBuffer(model, TEXTS, [IN, OUT], buffer_tokens=1024, batch_size=8, exclude_first=1,
                           corpus={"source": "mine.txt"})
    tc = Transcoder(d_sae=16, batch_size=64, n_steps=2).fit(buf)
    cfg = tc.dictionary_.cfg
    assert (cfg.prepend_bos, cfg.exclude_first, cfg.corpus) == (True, 1, {"source": "mine.txt"})
    short = ActivationBuffer(model, ["the", "on"], [IN, OUT], exclude_first=1)  # BOS + one token each
    assert [len(model.to_tokens(t).input_ids[0]) for t in ("the", "on")] == [2, 2]
    short.configure(batch_size=4)
    with pytest.raises(InputError, match=r"^texts: no token to train on: every text is at most 2 token\(s\) long, "
                                         r"and those are left out \(left out: the BOS position and the first 1 text "
                                         r"token\)$"):
        next(iter(short))


def test_cfg_json_records_the_rule_and_corpus_in_saelens_and_lmscope_keys(model: HookedModel,
                                                                         tmp_path: Path) -> None:
    d = _transcoder(model, 2)
    d.cfg.corpus = {"source": "user.txt", "max_tokens": 127, "texts_sha256": "ab"}
    save_dictionary(d, tmp_path)
    raw = json.loads((tmp_path / "cfg.json").read_text())
    assert (raw["prepend_bos"], raw["exclude_first"], raw["corpus"]["source"]) == (True, 2, "user.txt")
    meta = raw["metadata"]
    assert meta["prepend_bos"] is True and meta["seqpos_slice"] == [3, None]  # SAELens: first kept position
    assert (meta["dataset_path"], meta["context_size"]) == ("user.txt", 127)
    assert load_dictionary(tmp_path).cfg == d.cfg
    raw["exclude_first"] = -1
    (tmp_path / "cfg.json").write_text(json.dumps(raw))
    cfg_json = re.escape(str(tmp_path / "cfg.json"))
    with pytest.raises(InputError, match=f"^{cfg_json}: 'exclude_first' must be a non-negative integer, got -1$"):
        load_dictionary(tmp_path)
    raw.update(exclude_first=0, prepend_bos="yes")
    (tmp_path / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match=f"^{cfg_json}: 'prepend_bos' must be true, false or null, got 'yes'$"):
        load_dictionary(tmp_path)
    unknown = Dictionary(DictConfig(kind="sae", d_in=4, d_sae=8, hook_name="blocks.0.hook_resid_post"))
    save_dictionary(unknown, tmp_path / "u")  # trained from tensors: nothing claimed about the data
    meta = json.loads((tmp_path / "u" / "cfg.json").read_text())["metadata"]
    assert "prepend_bos" not in meta and "seqpos_slice" not in meta


def test_metrics_count_only_kept_rows_and_the_splice_leaves_leading_positions(model: HookedModel) -> None:
    d = _transcoder(model, 1)  # recorded: BOS + 1 text token left out
    lengths = model.to_tokens(TEXTS).lengths
    result = dictionary_metrics(model, d, TEXTS)
    assert result["positions"] == {"prepend_bos": True, "exclude_first": 1, "excluded_leading_positions": 2}
    assert result["metrics"]["n_rows"] == int((lengths - 2).sum())
    assert result["spliced"]["n_tokens"] == int((lengths - 3).sum())  # predictions from kept positions
    _, clean = model.run_with_cache(TEXTS, names=[OUT])
    _, spliced = model.run_with_cache(TEXTS, names=[OUT], hooks=Splice(d, keep_first=2).hooks())
    assert torch.equal(spliced[OUT][:, :2], clean[OUT][:, :2])  # no dictionary at the sinks
    y_hat = d(model.run_with_cache(TEXTS, names=[IN])[1][IN])[0]
    torch.testing.assert_close(spliced[OUT][:, 2:], y_hat[:, 2:].detach(), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match=r"^keep_first: expected a non-negative number of positions, got -1$"):
        Splice(d, keep_first=-1)


def _bos_detector(model: HookedModel) -> Dictionary:
    """An SAE on resid_pre whose feature 0 reads the BOS row's direction (the same vector in every text)."""
    bos = model.run_with_cache("cat", names=[RESID_PRE])[1][RESID_PRE][0, 0]
    d = Dictionary(DictConfig(kind="sae", d_in=model.cfg.d_model, d_sae=2, hook_name=RESID_PRE, prepend_bos=True),
                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d.b_dec.zero_()
        d.W_enc[:, 0] = bos / bos.norm()
    return d


def test_a_feature_that_fires_most_on_bos_shows_text_positions_only(model: HookedModel) -> None:
    d = _bos_detector(model)
    rows = [model.run_with_cache(t, names=[RESID_PRE])[1][RESID_PRE][0] for t in TEXTS]
    z = [d.encode(r)[:, 0].detach() for r in rows]
    assert all(int(zt.argmax()) == 0 for zt in z)  # without the rule, every text's top position is the BOS
    kept = torch.cat([zt[1:] for zt in z])
    (report,) = feature_reports(model, d, TEXTS, features=[0], k=3, batch_size=5)
    assert [v for v, _ in report.top_examples] == pytest.approx(kept.topk(3).values.tolist(), abs=1e-5)
    assert report.density == pytest.approx(float((kept > 0).float().mean()))
    assert all("<|endoftext|>" not in text for _, text in report.top_examples)
    assert max(v for v, _ in report.top_examples) < float(z[0][0]) - 1e-3


def harmful_mlp_model() -> HookedModel:
    """zoo:gpt2-tiny with block 1's MLP output negated and doubled: the MLP now hurts, so mean-ablating it
    lowers the loss (9.2 -> 2.4 nats on the synthetic corpus)."""
    m = HookedModel.from_pretrained("zoo:gpt2-tiny")
    with torch.no_grad():
        m.hf.transformer.h[1].mlp.c_proj.weight.mul_(-2.0)
        m.hf.transformer.h[1].mlp.c_proj.bias.mul_(-2.0)
    return m


def test_loss_recovered_is_undefined_where_ablation_helps() -> None:
    from lmscope.data.synthetic import generate_corpus

    m = harmful_mlp_model()
    texts = [s.text for s in generate_corpus(12, seed=1)]
    d = Dictionary(DictConfig(kind="transcoder", d_in=m.cfg.d_model, d_sae=32, hook_name=IN, hook_name_out=OUT),
                   generator=torch.Generator().manual_seed(0))
    r = spliced_metrics(m, d, texts)
    assert r.ablated_loss < r.clean_loss - 1.0  # the construction: ablation helps by over a nat
    assert math.isnan(r.loss_recovered) and r.to_dict()["loss_recovered"] is None
    assert r.loss_recovered_note is not None and r.loss_recovered_note.startswith("undefined: mean-ablating "
                                                                                    "blocks.1.hook_mlp_out")
    assert recovered_fraction(1.0, 1.5, 3.0) == (0.75, None)
    assert math.isnan(recovered_fraction(2.0, 1.0, 2.0)[0])  # no gap at all: undefined too


def test_first_position_note_flags_a_sink_at_a_text_token() -> None:
    from lmscope.dictionary.positions import first_position_note

    m = tiny_hooked_with_tokenizer(300)
    m.prepend_bos = False
    hook = "blocks.1.hook_resid_post"
    assert first_position_note(m, TEXTS[:8], hook, PositionRule(False)) is None  # random init: no outlier
    with torch.no_grad():
        m.hf.transformer.wpe.weight[0].mul_(1000.0)  # a massive activation at position 0, as SmolLM2 has
    note = first_position_note(m, TEXTS[:8], hook, PositionRule(False))
    assert note is not None and note.startswith(f"position 0 looks like an attention sink at {hook}")
    assert note.endswith("consider --exclude-first 1")
    assert first_position_note(m, TEXTS[:8], hook, PositionRule(False, 1)) is None  # already left out
    assert first_position_note(m, TEXTS[:8], hook, PositionRule(True)) is None  # position 0 is the BOS
