"""Succession, mod-10 and their counts on tokenizers shaped like real models': numbers split into digits (only
0-9 are one token) and word-level vocabularies whose missing words encode as the unknown token."""

from __future__ import annotations

import re

import pytest
import torch

from heads.tiny_tokenizers import tiny_llama, word_level
from lmscope import HookedModel
from lmscope.data.sequences import SUCCESSION_TASKS
from lmscope.errors import InputError
from lmscope.heads import succession_scores
from lmscope.heads.mod10 import check_residues, mod10_features, residue_support
from lmscope.heads.succession import tokenize_tasks
from tiny_models import tiny_hooked_with_tokenizer

MISSING = ("Thursday", "Mar", "twelve")


@pytest.fixture(scope="module")
def digit_split() -> HookedModel:
    tok = word_level(MISSING)
    return HookedModel(tiny_llama(len(tok)), tok)


def test_unknown_words_are_dropped_and_counted(digit_split: HookedModel) -> None:
    tok = digit_split.tokenizer
    groups, drops = tokenize_tasks(tok, dict(SUCCESSION_TASKS))
    assert all(tok.unk_token_id not in g.ids.tolist() for g in groups)  # [UNK] never stands for an item
    # both variants of each missing word are unknown; numbers drop 10-199 in both variants, as several tokens
    assert drops.unknown == {"numbers": 0, "number_words": 2, "ordinals": 0, "days": 2, "day_abbrevs": 0,
                             "months": 0, "month_abbrevs": 2, "letters": 0}
    assert drops.dropped["numbers"] == 380 and drops.dropped["days"] == 2 and drops.tried["days"] == 14
    result = succession_scores(digit_split)
    assert result.unknown == drops.unknown and result.dropped == drops.dropped
    # days: Mon-Tue, Tue-Wed, Fri-Sat, Sat-Sun, Sun-Mon; month_abbrevs: 12 cyclic pairs less Feb-Mar, Mar-Apr;
    # number_words: 0-20 less eleven-twelve, twelve-thirteen
    assert result.n_pairs == {"numbers": 9, "number_words": 18, "ordinals": 11, "days": 5, "day_abbrevs": 7,
                             "months": 12, "month_abbrevs": 10, "letters": 25, "ood:roman_numerals": 11}


def test_thin_tasks_stay_out_of_the_headline(digit_split: HookedModel) -> None:
    result = succession_scores(digit_split)
    assert result.min_pairs == 10 and result.thin_tasks == ["numbers", "days", "day_abbrevs"]
    assert result.headline_tasks == ["number_words", "ordinals", "months", "month_abbrevs", "letters"]
    assert not result.headline_is_thin
    mean = sum(result.per_task[t] for t in result.headline_tasks) / 5
    assert torch.allclose(result.scores, mean)
    assert set(result.per_task) == set(SUCCESSION_TASKS)  # thin tasks keep their own scores
    every = succession_scores(digit_split, min_pairs=1)
    assert every.thin_tasks == [] and len(every.headline_tasks) == 8
    assert torch.allclose(every.scores, sum(every.per_task.values()) / 8)
    # no task reaches 100 pairs: the headline falls back to every task with a pair, and says so
    none = succession_scores(digit_split, min_pairs=100)
    assert none.headline_is_thin and none.headline_tasks == every.headline_tasks
    assert torch.equal(none.scores, every.scores)
    d = none.to_dict()
    assert d["headline_is_thin"] is True and d["thin_tasks"] == list(SUCCESSION_TASKS)
    with pytest.raises(InputError, match=r"^min_pairs: got 0, expected at least 1$"):
        succession_scores(digit_split, min_pairs=0)


def test_mod10_refuses_digit_split_numbers_before_any_work(digit_split: HookedModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert residue_support(digit_split).tolist() == [1] * 9 + [0]  # 0 -> 1 ... 8 -> 9; 10 is two tokens
    short = re.escape("model: mod-10 features need every residue 0-9 on at least 2 single-token numbers whose "
                      "successor is one token too; this tokenizer has 10 single-token numbers (0-9: it splits longer "
                      "numbers into digits), which leaves every residue short (per residue: 1, 1, 1, 1, 1, 1, 1, 1, 1, "
                      "0)")
    with pytest.raises(InputError, match=f"^{short}$"):
        check_residues(digit_split)

    def no_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("an SAE was fitted before the tokenizer was checked")

    monkeypatch.setattr("lmscope.heads.mod10.fit_embedding_sae", no_fit)
    with pytest.raises(InputError, match=f"^{short}$"):
        mod10_features(digit_split, 1, 0)


def test_residue_support_of_a_tokenizer_with_every_number() -> None:
    model = tiny_hooked_with_tokenizer()
    # 0-199 are single tokens in both variants; 199 has no successor, so residue 9 has one fewer per variant
    assert residue_support(model).tolist() == [40] * 9 + [38]
    check_residues(model)
    short = re.escape("model: mod-10 features need every residue 0-9 on at least 39 single-token numbers whose "
                      "successor is one token too; this tokenizer has 200 single-token numbers (0-199), which leaves "
                      "residue 9 short (per residue: 40, 40, 40, 40, 40, 40, 40, 40, 40, 38)")
    with pytest.raises(InputError, match=f"^{short}$"):
        check_residues(model, 39)


def test_report_section_shows_pairs_drops_and_thin_tasks(digit_split: HookedModel) -> None:
    from lmscope.report.blocks import Table
    from lmscope.report.heads_sections import successor_heads_section

    succession = succession_scores(digit_split).to_dict()
    mod10 = {"features": [], "mean_coverage": 0.0, "probe": {"accuracy": 0.0, "mean_cosine": 0.0}}
    arithmetic = {"rates": {}, "n_edits": {}, "overall": 0.0, "k": 1.0}
    wild = {"tokens": 0, "shares": {}}
    section = successor_heads_section("tiny", succession, {}, mod10, arithmetic, wild)
    table = next(b for b in section.blocks if isinstance(b, Table) and b.columns[0] == "task")
    rows = {row[0]: row for row in table.rows}
    assert list(rows) == list(SUCCESSION_TASKS)
    assert rows["numbers"][2:] == [9, "380/400", "no: too few pairs"]
    assert rows["days"][2:] == [5, "2/14 (2)", "no: too few pairs"]
    assert rows["letters"][2:] == [25, "0/52", "yes"]
