"""Held-out prompts: built-in tasks made from the traced prompt by substitution, and held-out files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lmscope import HookedModel
from lmscope.circuits import HeldoutCase, Target, greater_than_target, parse_target
from lmscope.circuits.heldout import DAYS, NAMES, NUMBER_WORDS, _keep, builtin_cases, read_cases
from lmscope.errors import InputError

WORDS = ["[UNK]", ",", "from", "the", "year", "to", "When", "and", "went", "store", "gave", "a", "drink", *DAYS,
         *NAMES, *NUMBER_WORDS, *map(str, range(10))]
IOI = "When Mary and John went to the store, John gave a drink to"


def word_model() -> HookedModel:
    """A random GPT-2 over whole words, punctuation split off, numbers cut into single digits."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=len(WORDS), n_positions=32, bos_token_id=0,
                     eos_token_id=0, pad_token_id=0)
    return HookedModel(GPT2LMHeadModel(cfg).eval(),
                       PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[UNK]"))


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return word_model()


def _id(model: HookedModel, word: str) -> int:
    return WORDS.index(word)


def test_days_shift_the_run_and_the_target(model: HookedModel) -> None:
    prompt = "Monday, Tuesday, Wednesday,"
    cases, skipped = builtin_cases(model, prompt, parse_target("logit:Thursday-Monday", model), "days", 20)
    assert len(cases) == 6 and skipped == []  # every other start of the week, and nothing more
    assert cases[0].prompt == "Tuesday, Wednesday, Thursday," and cases[5].prompt == "Sunday, Monday, Tuesday,"
    assert (cases[0].target.plus, cases[0].target.minus) == ((_id(model, "Friday"),), (_id(model, "Tuesday"),))
    assert cases[0].target.label == "logit:Friday-Tuesday"
    assert (cases[5].target.plus, cases[5].target.minus) == ((_id(model, "Wednesday"),), (_id(model, "Sunday"),))
    assert prompt not in [c.prompt for c in cases]
    assert len(builtin_cases(model, prompt, parse_target("logit:Thursday", model), "days", 2)[0]) == 2


def test_numbers_shift_words_and_integers_within_range(model: HookedModel) -> None:
    cases, _ = builtin_cases(model, "one two three", parse_target("logit:four", model), "numbers", 30)
    assert len(cases) == 16  # "four" can move up to "twenty"; nothing below "one"
    assert cases[0].prompt == "two three four" and cases[0].target.plus == (_id(model, "five"),)
    assert cases[-1].prompt == "seventeen eighteen nineteen" and cases[-1].target.plus == (_id(model, "twenty"),)
    digits, _ = builtin_cases(model, "3, 4, 5,", parse_target("logit:6", model), "numbers", 30)
    assert [c.prompt for c in digits] == ["2, 3, 4,", "4, 5, 6,", "1, 2, 3,", "5, 6, 7,", "0, 1, 2,", "6, 7, 8,"]
    assert [c.target.plus for c in digits] == [(_id(model, str(d)),) for d in (5, 7, 4, 8, 3, 9)]


def test_ioi_renames_both_names_everywhere(model: HookedModel) -> None:
    cases, _ = builtin_cases(model, IOI, parse_target("logit:Mary-John", model), "ioi", 10, seed=3)
    assert len(cases) == 10 and len({c.prompt for c in cases}) == 10
    for c in cases:
        m = re.fullmatch(r"When (\w+) and (\w+) went to the store, (\w+) gave a drink to", c.prompt)
        assert m is not None and m.group(2) == m.group(3) and m.group(1) != m.group(2)
        assert {m.group(1), m.group(2)}.isdisjoint({"Mary", "John"})
        assert (c.target.plus, c.target.minus) == ((_id(model, m.group(1)),), (_id(model, m.group(2)),))


def test_greater_than_rebuilds_the_target_for_each_year(model: HookedModel) -> None:
    prompt = "from the year 1732 to the year 17"
    cases, _ = builtin_cases(model, prompt, parse_target("greater-than:1732", model), "greater-than", 12)
    assert len(cases) == 12 and prompt not in [c.prompt for c in cases]
    for c in cases:
        m = re.fullmatch(r"from the year (1[1-9])(\d\d) to the year (\d\d)", c.prompt)
        assert m is not None and m.group(1) == m.group(3) and 10 <= int(m.group(2)) <= 89
        assert (c.target.plus, c.target.minus) == (lambda t: (t.plus, t.minus))(
            greater_than_target(model, int(m.group(2))))
    with pytest.raises(InputError, match=r"^target: the greater-than task needs a greater-than:YY target"):
        builtin_cases(model, prompt, parse_target("logit:4-1", model), "greater-than", 5)
    with pytest.raises(InputError, match="ending with its century"):
        builtin_cases(model, "from the year 1732 to the", parse_target("greater-than:32", model), "greater-than", 5)


def test_builtin_refusals(model: HookedModel) -> None:
    target = parse_target("logit:Monday", model)
    with pytest.raises(InputError, match=r"^task: 'weeks' is neither a file nor a built-in task \(days"):
        builtin_cases(model, "Monday,", target, "weeks", 5)
    with pytest.raises(InputError, match=r"^n: expected a positive number of prompts, got 0$"):
        builtin_cases(model, "Monday,", target, "days", 0)
    with pytest.raises(InputError, match=r"^task: ioi: the prompt has no ioi to substitute"):
        builtin_cases(model, "the store", target, "ioi", 5)


def test_keep_skips_other_lengths_and_lost_targets(model: HookedModel) -> None:
    t = Target("logit", (1,))
    cases, skipped = _keep(model, "the store", [("the store", lambda: t), ("a drink to", lambda: t),
                                                ("a drink", lambda: None), ("a store", lambda: t)], 5)
    assert [c.prompt for c in cases] == ["a store"]  # the traced prompt itself is never held out
    assert skipped == ["'a drink to': another number of tokens", "'a drink': the target is not a single token there"]
    with pytest.raises(InputError, match=r"no held-out prompt could be made.*another number of tokens"):
        _keep(model, "the store", [("a drink to", lambda: t)], 5)


def test_read_cases_from_jsonl_and_lines(model: HookedModel, tmp_path: Path) -> None:
    jsonl = tmp_path / "held.jsonl"
    jsonl.write_text('{"prompt": "Tuesday, Wednesday,", "target": "logit:Thursday"}\n\n'
                     '{"prompt": "Friday, Saturday,"}\n')
    cases = read_cases(jsonl, model, "logit:Monday", position=-2)
    assert cases == [HeldoutCase("Tuesday, Wednesday,", parse_target("logit:Thursday", model, pos=-2)),
                     HeldoutCase("Friday, Saturday,", parse_target("logit:Monday", model, pos=-2))]
    lines = tmp_path / "held.txt"
    lines.write_text("Tuesday, Wednesday,\tlogit:Thursday\nFriday, Saturday,\nSunday, Monday,\n")
    assert [c.target.plus for c in read_cases(lines, model, "logit:Monday", limit=2)] == [
        (_id(model, "Thursday"),), (_id(model, "Monday"),)]
    for text, message in [('{"prompt": 1}', "line 1: expected"), ("{nope", "line 1: not JSON"),
                          ('{"prompt": "a"}\n{"prompt": "b", "target": "logit:nothere"}', "line 2: target:"),
                          ("", "holds no prompts")]:
        jsonl.write_text(text)
        with pytest.raises(InputError, match=f"^{re.escape(str(jsonl))} {message}" if "line" in message
                           else message):
            read_cases(jsonl, model, "logit:Monday")
    with pytest.raises(InputError, match=f"^{re.escape(str(tmp_path))}: cannot read it"):
        read_cases(tmp_path, model, "logit:Monday")
