"""`greater-than:YY` on tokenizers that split years into single digits (as SmolLM2, Llama and Gemma do), that
keep two-digit years whole, and that have no number tokens at all; and circuits with layers lacking a transcoder."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lmscope import HookedModel
from lmscope.circuits import Target, greater_than_target, parse_target, trace_circuit
from lmscope.circuits.analysis import describe_missing
from lmscope.dictionary import DictConfig, Dictionary
from lmscope.errors import InputError

WORDS = ["[UNK]", "from", "the", "year", "to", "war"]
PROMPT = "from the year 1732 to the year 17"


def _tokenizer(words: list[str], digits: bool) -> PreTrainedTokenizerFast:
    """Word-level; with `digits`, numbers are cut into single digits ("1732" -> "1", "7", "3", "2")."""
    vocab = {w: i for i, w in enumerate(words + ([str(d) for d in range(10)] if digits else []))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    splits = [pre_tokenizers.WhitespaceSplit()] + ([pre_tokenizers.Digits(individual_digits=True)] if digits else [])
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[UNK]")


def _model(tokenizer: PreTrainedTokenizerFast, n_layer: int = 3) -> HookedModel:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=n_layer, n_embd=16, n_head=2, vocab_size=len(tokenizer), n_positions=32,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return HookedModel(GPT2LMHeadModel(cfg).eval(), tokenizer)


def test_digit_split_years_target_the_tens_digit() -> None:
    model = _model(_tokenizer(WORDS, digits=True))
    tok = model.tokenizer
    assert [tok.decode([i]) for i in tok(PROMPT)["input_ids"]][-2:] == ["1", "7"]  # the year is cut into digits
    digit = {d: tok.convert_tokens_to_ids(str(d)) for d in range(10)}
    target = parse_target("greater-than:32", model)
    assert target.plus == tuple(digit[d] for d in range(4, 10)) and target.minus == (digit[0], digit[1], digit[2])
    assert target.label.startswith("greater-than:32: ") and "digits" in target.label and "3" in target.label
    by_year = parse_target("greater-than:1732", model)
    assert (by_year.plus, by_year.minus) == (target.plus, target.minus)
    assert by_year.label.startswith("greater-than:1732: ")  # names the year as given
    assert greater_than_target(model, 32) == target
    for bad, message in [("greater-than:95", "use YY 10..89"), ("greater-than:05", "use YY 10..89"),
                         ("greater-than:173", "expected YY"), ("greater-than:99", "YY in 0..98")]:
        with pytest.raises(InputError, match=message):
            parse_target(bad, model)
    result = trace_circuit(model, {}, PROMPT, target, n_iters=1, branches=2, check=False)
    with torch.no_grad():
        logits = model(PROMPT)[0, -1].double()
    by_hand = logits[list(target.plus)].mean() - logits[list(target.minus)].mean()
    assert result.attribution.value == pytest.approx(float(by_hand), rel=1e-6)


def test_whole_two_digit_years_and_no_numbers() -> None:
    years = [f"{n:02d}" for n in range(100)]
    model = _model(_tokenizer([*WORDS, *years], digits=False))
    target = parse_target("greater-than:1732", model)
    assert len(target.plus) == 67 and len(target.minus) == 33  # 33..99 against 00..32, one token each
    assert target.minus[-1] == model.tokenizer.convert_tokens_to_ids("32")
    assert target.label == "greater-than:1732: mean logit(YY 33..99) - mean logit(YY 00..32)"
    words_only = _model(_tokenizer(WORDS, digits=False))  # "3" is the unknown token here, not a digit
    with pytest.raises(InputError, match="needs the years 00-99 as single tokens, or the digits 0-9"):
        parse_target("greater-than:32", words_only)


def test_layers_without_a_transcoder_are_named() -> None:
    model = _model(_tokenizer(WORDS, digits=True))
    cfg = DictConfig(kind="transcoder", d_in=16, d_sae=8, hook_name="blocks.1.ln2.hook_normalized",
                     hook_name_out="blocks.1.hook_mlp_out")
    tcs = {1: Dictionary(cfg, generator=torch.Generator().manual_seed(0))}
    target = parse_target("greater-than:32", model)
    result = trace_circuit(model, tcs, PROMPT, target, n_iters=2, branches=3, check=False)
    assert result.options["layers_without_transcoder"] == [0, 2]
    assert result.to_dict()["options"]["layers_without_transcoder"] == [0, 2]
    assert {n.layer for n, _ in result.attribution.terms if n.kind == "mlp"} == {0, 2}  # opaque MLP leaves
    assert describe_missing([0, 2], 3) == ("no transcoder for layers 0, 2 of 3: each is one opaque 'mlp' leaf, "
                                           "with no features")
    feature = trace_circuit(model, tcs, PROMPT, Target("feature", layer=1, feature=0), n_iters=1, check=False)
    assert feature.options["layers_without_transcoder"] == [0]  # a layer-1 feature reads MLP 0 only
    none = trace_circuit(model, {}, PROMPT, target, n_iters=1, check=False)
    assert describe_missing(none.options["layers_without_transcoder"], 3).startswith("no layer has a transcoder")
    assert describe_missing([], 3) is None
    assert describe_missing([0, 1, 2, 3, 5, 7, 8, 9], 12).startswith("no transcoder for layers 0-3, 5, 7-9 of 12: ")
    assert describe_missing([4], 12).startswith("no transcoder for layer 4 of 12: it is one")
