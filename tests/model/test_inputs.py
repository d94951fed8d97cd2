"""Strings go in exactly as the model's own tokenizer encodes them; prepend_bos forces a BOS or none.

Tokenizers are built here in the shape of SmolLM2's: a chat-turn token named as BOS that plain text never
gets (adds nothing), and the same vocabulary with a tokenizer that adds that BOS (as Llama's and Gemma's do).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model.inputs import add_bos_template, added_special_tokens, to_token_batch, tokenizer_adds_bos
from tiny_models import tiny_hf_model

WORDS = ["the", "cat", "sat", "on", "mat", "a", "b", "c", "d"]
VOCAB = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}


def smol_tokenizer(*, adds_bos: bool = False, adds_eos: bool = False, bos: str | None = "<|im_start|>") -> Any:
    """Word-level, SmolLM2's special tokens; `adds_bos`/`adds_eos`: what tokenizer(text) puts around a text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(VOCAB, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    single = " ".join([*(["<|im_start|>"] if adds_bos else []), "$A", *(["<|im_end|>"] if adds_eos else [])])
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{single} $B:1", special_tokens=[("<|im_start|>", 1), ("<|im_end|>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tok


def hf_logits(hf: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(input_ids=torch.tensor([ids])).logits


@pytest.fixture
def hf() -> torch.nn.Module:
    return tiny_hf_model("llama")


def test_probe_sees_what_the_tokenizer_adds() -> None:
    assert added_special_tokens(smol_tokenizer()) == ([], [])
    assert added_special_tokens(smol_tokenizer(adds_bos=True)) == ([1], [])
    assert added_special_tokens(smol_tokenizer(adds_bos=True, adds_eos=True)) == ([1], [2])
    assert not tokenizer_adds_bos(smol_tokenizer())  # has a bos_token, adds nothing: no BOS
    assert tokenizer_adds_bos(smol_tokenizer(adds_bos=True))
    assert not tokenizer_adds_bos(smol_tokenizer(bos=None)) and not tokenizer_adds_bos(None)


@pytest.mark.parametrize("adds_bos", [False, True])
def test_string_equals_tokenizer_call(hf: torch.nn.Module, adds_bos: bool) -> None:
    tok = smol_tokenizer(adds_bos=adds_bos)
    m = HookedModel(hf, tok)
    text = "the cat sat on the mat"
    assert m.prepend_bos is adds_bos  # position 0 is a BOS exactly when the tokenizer put one there
    ids = tok(text)["input_ids"]
    assert ids[0] == 1 if adds_bos else ids[0] == VOCAB["the"]
    assert m.to_tokens(text).input_ids[0].tolist() == ids
    with torch.no_grad():
        assert torch.equal(m(text), hf(**tok(text, return_tensors="pt")).logits)
        logits, cache = m.run_with_cache(text)  # every hook point capturing changes nothing
    assert torch.equal(logits, hf_logits(hf, ids)) and len(cache) == len(m.hook_names)
    assert m.to_str_tokens("the cat") == (["<|im_start|>"] if adds_bos else []) + ["the", "cat"]


def test_prepend_bos_overrides_the_tokenizer(hf: torch.nn.Module) -> None:
    plain, adding = smol_tokenizer(), smol_tokenizer(adds_bos=True)
    text, words = "a b c", [VOCAB["a"], VOCAB["b"], VOCAB["c"]]
    asked = HookedModel(hf, plain, prepend_bos=True)
    assert asked.prepend_bos and asked.to_tokens(text).input_ids[0].tolist() == [1, *words]
    assert torch.equal(asked(text), hf_logits(hf, [1, *words]))
    refused = HookedModel(hf, adding, prepend_bos=False)
    assert not refused.prepend_bos and refused.to_tokens(text).input_ids[0].tolist() == words
    assert torch.equal(refused(text), hf_logits(hf, words))
    # per call, both ways, on either model; a BOS typed in the text itself is text and is kept
    assert HookedModel(hf, plain).to_tokens(text, prepend_bos=True).input_ids[0].tolist() == [1, *words]
    assert HookedModel(hf, adding).to_tokens("<|im_start|> a", prepend_bos=False).input_ids[0].tolist() == [1, 8]
    assert HookedModel(hf, plain).to_str_tokens("a", prepend_bos=True) == ["<|im_start|>", "a"]
    # a suffix the tokenizer adds stays, whatever happens at the front
    eos = HookedModel(hf, smol_tokenizer(adds_bos=True, adds_eos=True), prepend_bos=False)
    assert eos.to_tokens("a").input_ids[0].tolist() == [VOCAB["a"], 2]


def test_batches_pad_right_like_single_strings(hf: torch.nn.Module) -> None:
    m = HookedModel(hf, smol_tokenizer(adds_bos=True))
    batch = m.to_tokens(["a b c", "d"])
    assert batch.input_ids.tolist() == [[1, 8, 9, 10], [1, 11, 2, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    torch.testing.assert_close(m(["a b c", "d"])[1, :2], m("d")[0], atol=1e-5, rtol=1e-5)


def test_bos_errors(hf: torch.nn.Module) -> None:
    with pytest.raises(InputError, match=r"^prepend_bos=True: the tokenizer has no bos_token to prepend$"):
        HookedModel(hf, smol_tokenizer(bos=None), prepend_bos=True)
    with pytest.raises(InputError, match=r"^prepend_bos=True: the tokenizer has no bos_token to prepend$"):
        to_token_batch("a", smol_tokenizer(bos=None), prepend_bos=True, device=torch.device("cpu"))
    m = HookedModel(hf, smol_tokenizer())
    with pytest.raises(InputError, match=r"^inputs: an empty string gives no tokens; pass prepend_bos=True or a "
                                         r"non-empty text$"):
        m("")
    assert m.to_tokens("", prepend_bos=True).input_ids.tolist() == [[1]]


def test_add_bos_template_makes_the_tokenizer_add_it() -> None:
    tok = smol_tokenizer()
    assert add_bos_template(tok) is tok and tok("a b")["input_ids"] == [1, 8, 9]
    assert tok("a b", add_special_tokens=False)["input_ids"] == [8, 9]
    with pytest.raises(InputError, match=r"^tokenizer: has no bos_token, so it cannot add one$"):
        add_bos_template(smol_tokenizer(bos=None))


def test_check_fits_limits() -> None:
    from lmscope.model.inputs import check_fits

    check_fits(torch.zeros(2, 8, dtype=torch.long), n_ctx=8, d_vocab=1)
    with pytest.raises(InputError, match=r"^inputs: 9 tokens, longer than the model's context of 8 \(n_ctx\)"):
        check_fits(torch.zeros(1, 9, dtype=torch.long), n_ctx=8, d_vocab=1)
    with pytest.raises(InputError, match=r"^inputs: token id 5 is outside the model's vocabulary \(ids 0\.\.4, "):
        check_fits(torch.tensor([[0, 5]]), n_ctx=8, d_vocab=5)
