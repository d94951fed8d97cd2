"""The white-box comparison on tiny random-init models (no zoo training): structure, known answers, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.autointerp import RecordConfig
from lmscope.errors import InputError
from lmscope.model.crate import CrateForCausalLM
from lmscope.model.crate_config import CrateConfig
from lmscope.whitebox.compare import HELDOUT_SEED, CompareConfig, ComparisonResult, compare_models
from tiny_models import tiny_hooked_with_tokenizer

SMALL = CompareConfig(n_sentences=60, units_per_layer=6, heldout_samples=50,
                      records=RecordConfig(n_top_explain=4, n_top_score=4, n_random=4, n_quantiles=2,
                                           n_per_quantile=1, n_nonactivating=4))


def tiny_pair() -> tuple[HookedModel, HookedModel]:
    gpt = tiny_hooked_with_tokenizer()
    torch.manual_seed(0)
    crate = CrateForCausalLM(CrateConfig(vocab_size=gpt.cfg.d_vocab, n_positions=128, n_embd=32, n_layer=2,
                                         n_head=4, ista_expansion=2)).eval()
    return HookedModel(crate, gpt.tokenizer), gpt


@torch.no_grad()
def _plain_heldout_loss(model: HookedModel, n_samples: int, seq_len: int = 64) -> float:
    """Reference: the zoo's held-out corpus as one stream (each document after the BOS/separator token), cut into
    non-overlapping windows of `seq_len`, next-token cross-entropy of the HF model alone."""
    from lmscope.data.synthetic import generate_corpus

    tok, stream = model.tokenizer, []
    for s in generate_corpus(n_samples, seed=HELDOUT_SEED, split="heldout"):
        stream += [tok.bos_token_id, *tok(s.text, add_special_tokens=False)["input_ids"]]
    ids = torch.tensor(stream)
    n = (len(ids) - 1) // seq_len
    logits = model.hf(input_ids=ids[: n * seq_len].view(n, seq_len)).logits
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[1: n * seq_len + 1]))


@torch.no_grad()
def _plain_text_loss(model: HookedModel, texts: list[str]) -> float:
    """Reference: each text tokenized as the tokenizer does, one at a time (no padding), next-token
    cross-entropy averaged over every predicted token of every text."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([model.tokenizer(text)["input_ids"]])
        logits = model.hf(input_ids=ids).logits[0, :-1]
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    return total / count


@pytest.fixture(scope="module")
def compared() -> ComparisonResult:
    crate, gpt = tiny_pair()
    return compare_models([crate, gpt, gpt], SMALL, names=["crate", "gpt", "gpt-again"], corpus="synthetic")


def test_comparison_structure_and_known_answers(compared: ComparisonResult) -> None:
    crate, gpt = tiny_pair()
    assert compared.models == ["crate", "gpt", "gpt-again"]
    per = compared.per_model
    assert per["crate"]["family"] == "crate" and per["crate"]["d_mlp"] == 64 and per["gpt"]["d_mlp"] == 128
    assert per["gpt"]["heldout_loss"] == pytest.approx(_plain_heldout_loss(gpt, 50), rel=1e-5)
    assert per["crate"]["heldout_loss"] == pytest.approx(_plain_heldout_loss(crate, 50), rel=1e-5)
    assert per["crate"]["n_params"] == sum(p.numel() for p in crate.hf.parameters())
    assert set(per["crate"]["summary"]) == {"0", "1", "all"}
    assert per["crate"]["summary"]["all"]["top_and_random"]["n"] + per["crate"]["summary"]["all"]["top_and_random"][
        "n_undefined"] == 12  # 6 neurons per layer, 2 layers
    assert set(compared.relative) == {"gpt", "gpt-again"} and set(compared.relative["gpt"]) == {"0", "1", "all"}
    # the same model twice: identical neurons sampled and scored, so the same summary
    assert per["gpt"]["summary"] == per["gpt-again"]["summary"]
    assert compared.relative["gpt"] == compared.relative["gpt-again"]
    rel = compared.relative["gpt"]["all"]["top_and_random"]
    crate_mean = per["crate"]["summary"]["all"]["top_and_random"]["mean"]
    gpt_mean = per["gpt"]["summary"]["all"]["top_and_random"]["mean"]
    if gpt_mean > 0:  # random-init scores may be of either sign; the ratio is defined for a positive baseline
        assert rel["value"] == pytest.approx(crate_mean / gpt_mean - 1)
    else:
        assert rel["value"] is None
    assert all(len(units) == 12 for units in compared.units.values())
    for name, units in compared.units.items():  # undefined scores counted as 0
        values = [u["random_only"] if math.isfinite(u["random_only"]) else 0.0 for u in units]  # in memory: NaN
        filled = per[name]["summary"]["all"]["random_only"]["zero_filled"]["mean"]
        assert filled == pytest.approx(sum(values) / len(values))
    assert set(compared.relative["gpt"]["all"]["detection"]["zero_filled"]) == {"value", "lo", "hi"}
    assert compared.seconds > 0
    assert compared.corpus == {"source": "synthetic"} and compared.skipped == {}


def test_comparison_files(compared: ComparisonResult, tmp_path: Path) -> None:
    from lmscope.report.whitebox_sections import comparison_page

    assert set(compared.save(tmp_path / "json-only")) == {"json"}  # no page unless the caller draws one
    paths = compared.save(tmp_path, html=comparison_page(compared.to_dict()))
    saved = json.loads(paths["json"].read_text())
    assert saved["kind"] == "whitebox_comparison" and saved["models"] == ["crate", "gpt", "gpt-again"]
    html = paths["html"].read_text()
    assert "White-box (CRATE) vs GPT" in html and "crate vs gpt" in html
    with pytest.raises(InputError, match="already exists"):
        compared.save(tmp_path)


def test_one_model_is_refused() -> None:
    with pytest.raises(InputError, match="at least two"):
        compare_models(["zoo:gpt2-tiny"])


def test_cached_comparison_is_keyed_by_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmscope.data.tokenizer import save_tokenizer
    from lmscope.whitebox.compare import cached_comparison

    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path / "home"))
    crate, gpt = tiny_pair()
    dirs = []
    for name, model in (("crate", crate), ("gpt", gpt)):
        model.hf.save_pretrained(tmp_path / name)
        save_tokenizer(gpt.tokenizer, tmp_path / name)
        dirs.append(str(tmp_path / name))
    first = cached_comparison(dirs, SMALL)
    cached = list((tmp_path / "home" / "whitebox").glob("compare-*.json"))
    assert len(cached) == 1
    again = cached_comparison(dirs, SMALL)
    assert again.to_dict() == first.to_dict()  # read back, not recomputed: the same wall time too
    assert ComparisonResult.load(cached[0]).per_model == first.per_model
    with torch.no_grad():
        gpt.hf.transformer.h[0].mlp.c_fc.weight.mul_(2.0)
    gpt.hf.save_pretrained(tmp_path / "gpt")
    cached_comparison(dirs, SMALL)
    assert len(list((tmp_path / "home" / "whitebox").glob("compare-*.json"))) == 2
    with pytest.raises(InputError, match="not a white-box comparison"):
        ComparisonResult.load(tmp_path / "crate" / "config.json")


PROSE = ("The committee met on a grey Tuesday morning to review the budget, and after two hours of argument about "
         "roads, schools and the new library it agreed to postpone every decision until the spring, when the "
         "figures from the tax office would finally be known to everyone in the town.")


def test_models_that_are_not_zoo_models_need_a_corpus() -> None:
    crate, gpt = tiny_pair()
    with pytest.raises(InputError, match=r"^corpus: .* is not a zoo model, so give it your own text"):
        compare_models([crate, gpt], SMALL, names=["crate", "gpt"])
    with pytest.raises(InputError, match="no such file"):
        compare_models([crate, gpt], SMALL, names=["crate", "gpt"], corpus="/nowhere/docs.txt")


def test_common_windows_fit_every_tokenizer() -> None:
    from types import SimpleNamespace

    from lmscope.data.synthetic import generate_corpus
    from lmscope.data.tokenizer import train_tokenizer
    from lmscope.whitebox.compare import common_windows

    big = train_tokenizer(generate_corpus(1500, seed=0))
    small = train_tokenizer(generate_corpus(10, seed=1))  # fewer merges: more tokens per English word
    assert len(small(PROSE)["input_ids"]) > len(big(PROSE)["input_ids"])  # two different tokenizations
    models = [SimpleNamespace(tokenizer=big, prepend_bos=True, cfg=SimpleNamespace(n_ctx=1024)),
              SimpleNamespace(tokenizer=small, prepend_bos=False, cfg=SimpleNamespace(n_ctx=20))]
    docs = [PROSE, "short text"]
    windows = common_windows(docs, models, 32)  # type: ignore[arg-type]
    assert windows[-1] == "short text" and len(windows) > 3
    assert all(len(tok(w)["input_ids"]) <= 20 for w in windows for tok in (big, small))  # small: n_ctx 20
    assert all(w in PROSE for w in windows[:-1])  # windows are substrings of their document, in order
    assert "".join(windows[:-1]).replace(" ", "") == PROSE.replace(" ", "")  # covering it once (stride = length)


def test_comparison_on_a_user_corpus_skips_only_the_label_iou(tmp_path: Path) -> None:
    from lmscope.report import Report
    from lmscope.report.whitebox_sections import comparison_section
    from lmscope.whitebox.compare import common_windows

    crate, gpt = tiny_pair()
    (tmp_path / "docs.txt").write_text("\n".join([PROSE, "It rained.", PROSE.upper()] * 4) + "\n")
    cfg = CompareConfig(n_sentences=30, units_per_layer=6, heldout_samples=9, seq_len=24, records=SMALL.records)
    result = compare_models([crate, gpt], cfg, names=["crate", "gpt"], corpus=str(tmp_path / "docs.txt"))
    windows = common_windows([PROSE, "It rained.", PROSE.upper()] * 4, [crate, gpt], 24)
    assert result.corpus["source"] == str(tmp_path / "docs.txt") and result.corpus["n_documents"] == 12
    assert result.corpus["n_texts"] == len(windows) > 12 and result.corpus["max_tokens"] == 24
    assert result.corpus["n_texts_scored"] == min(30, len(windows)) and result.corpus["n_texts_loss"] == 9
    assert result.per_model["gpt"]["heldout_loss"] == pytest.approx(_plain_text_loss(gpt, windows[:9]), rel=1e-5)
    assert set(result.skipped) == {"best_iou"} and "synthetic corpus" in result.skipped["best_iou"]
    for name in ("crate", "gpt"):
        overall = result.per_model[name]["summary"]["all"]
        assert overall["best_iou"]["mean"] is None and overall["best_iou"]["n"] == 0
        assert overall["top_and_random"]["n"] + overall["top_and_random"]["n_undefined"] == 12
        assert overall["structure"]["mean_density"] > 0
    paths = result.save(tmp_path / "out")
    saved = ComparisonResult.load(paths["json"])
    assert saved.corpus == json.loads(json.dumps(result.corpus)) and saved.skipped == result.skipped
    report = Report("t")
    report.add(comparison_section(result.to_dict()))
    html = report.write(tmp_path / "r")["html"].read_text()
    assert "Skipped: best label IoU" in html and html.count("best label IoU") == 1  # no table row for it
    assert "loss on the corpus" in html
