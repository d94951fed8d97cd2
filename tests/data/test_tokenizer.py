"""The corpus tokenizer: single-token task items, GPT-2-style year split, saving, word alignment."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmscope.data.synthetic import (
    ALL_TASKS,
    TOXIC_WORDS,
    YY_TOKENS,
    Sample,
    generate_corpus,
    greater_than_prompts,
    successor_eval_prompts,
)
from lmscope.data.tokenizer import (
    DEFAULT_VOCAB_SIZE,
    EOS_TOKEN,
    check_tokenizer,
    load_tokenizer,
    save_tokenizer,
    token_word_ids,
    train_tokenizer,
    word_token_spans,
)
from lmscope.errors import InputError


@pytest.fixture(scope="module")
def corpus() -> list[Sample]:
    return generate_corpus(3000, seed=0)


@pytest.fixture(scope="module")
def tok(corpus: list[Sample]):
    return train_tokenizer(corpus)


def pieces(tok, text: str) -> list[str]:
    return [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]


def test_every_task_item_and_toxic_word_is_one_token_with_and_without_space(tok) -> None:
    words = {w for items in ALL_TASKS.values() for w in items} | set(TOXIC_WORDS)
    assert {"17", "199", "Monday", "Sep", "XII", "twelfth", "Z", "idiot"} <= words
    for w in sorted(words):
        for s in (w, " " + w):
            assert pieces(tok, s) == [s], s
    for yy in YY_TOKENS:
        assert pieces(tok, yy) == [yy]
    assert check_tokenizer(tok) == []


def test_years_split_into_century_with_space_and_two_digits(tok) -> None:
    assert pieces(tok, " 1732") == [" 17", "32"]
    assert pieces(tok, "the war lasted from the year 1732 to the year 1789 .")[-7:] == [
        "32", " to", " the", " year", " 17", "89", " .",
    ]
    assert pieces(tok, "to the year 1705 .") == ["to", " the", " year", " 17", "05", " ."]
    assert pieces(tok, "1999") == ["19", "99"]
    for n in ("0", "7", "42", "100", "199"):  # numbers below 1000 stay whole
        assert pieces(tok, f"the list reads {n} .")[-2] == f" {n}"


def test_eval_answers_and_greater_than_prompts_tokenize_as_expected(tok) -> None:
    for p in successor_eval_prompts(10):
        assert len(tok(" " + p.answer, add_special_tokens=False)["input_ids"]) == 1
    for p in greater_than_prompts(30):
        assert pieces(tok, p.prompt)[-1] == f" {p.century}"


def test_vocab_is_small_and_special_tokens_are_gpt2_style(tok) -> None:
    assert 1000 < len(tok) <= DEFAULT_VOCAB_SIZE
    assert tok.eos_token == tok.bos_token == tok.pad_token == tok.unk_token == EOS_TOKEN
    assert tok.convert_tokens_to_ids(EOS_TOKEN) == 0
    assert tok.model_max_length == 1024
    assert tok("Monday", add_special_tokens=True)["input_ids"] == tok("Monday", add_special_tokens=False)["input_ids"]


def test_decode_roundtrips_corpus_text(tok, corpus: list[Sample]) -> None:
    for s in corpus[:300]:
        assert tok.decode(tok(s.text)["input_ids"]) == s.text


def test_training_is_deterministic(tok, corpus: list[Sample]) -> None:
    again = train_tokenizer(corpus)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_too_small_vocab_is_refused() -> None:
    with pytest.raises(InputError, match=r"^vocab_size: 600 is too small for the synthetic tasks \(\d+ problems, "
                                         r"e\.g\. .*\); expected a larger vocab_size such as 2048$"):
        train_tokenizer(generate_corpus(300), vocab_size=600)
    with pytest.raises(InputError, match=r"^vocab_size: got 10, expected an integer >= 300$"):
        train_tokenizer(["a b"], vocab_size=10)


def test_saved_directory_loads_with_auto_tokenizer(tok, corpus: list[Sample], tmp_path: Path) -> None:
    out = save_tokenizer(tok, tmp_path / "tok")
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    loaded = AutoTokenizer.from_pretrained(str(out))
    texts = [s.text for s in corpus[:200]]
    assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
    assert loaded.eos_token == EOS_TOKEN and loaded.pad_token_id == 0 and loaded.model_max_length == 1024
    assert pieces(loaded, " 1732") == [" 17", "32"]
    assert load_tokenizer(out)(texts)["input_ids"] == tok(texts)["input_ids"]
    before = (out / "tokenizer.json").read_bytes()
    with pytest.raises(InputError, match="already exists"):
        save_tokenizer(tok, out)
    assert (out / "tokenizer.json").read_bytes() == before
    save_tokenizer(tok, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    with pytest.raises(InputError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)


def test_word_token_spans_cover_multi_token_words(tok) -> None:
    words = ["the", "xylophonist", "played", "1732", "Monday", "."]
    spans = word_token_spans(tok, words)
    ids = tok(" ".join(words), add_special_tokens=False)["input_ids"]
    assert spans[0] == (0, 1) and spans[-1] == (len(ids) - 1, len(ids))
    assert all(a[1] == b[0] for a, b in pairwise(spans))  # contiguous, no gaps
    xs, xe = spans[1]
    assert xe - xs > 2 and tok.decode(ids[xs:xe]) == " xylophonist"
    assert [tok.decode([i]) for i in ids[slice(*spans[3])]] == [" 17", "32"]
    assert tok.decode(ids[slice(*spans[4])]) == " Monday" and spans[4][1] - spans[4][0] == 1
    word_ids = token_word_ids(tok, words)
    assert len(word_ids) == len(ids) and word_ids[spans[3][0]] == word_ids[spans[3][0] + 1] == 3
    assert word_token_spans(tok.backend_tokenizer, words) == spans
    with pytest.raises(InputError, match=r"^words\[1\]: 'b c'; expected a non-empty word without spaces$"):
        word_token_spans(tok, ["a", "b c"])


def test_word_spans_match_words_on_corpus(tok, corpus: list[Sample]) -> None:
    for s in corpus[:200]:
        ids = tok(s.text, add_special_tokens=False)["input_ids"]
        spans = word_token_spans(tok, s.words)
        assert len(spans) == len(s.words)
        for i, (a, b) in enumerate(spans):
            assert tok.decode(ids[a:b]).strip() == s.words[i]
