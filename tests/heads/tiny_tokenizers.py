"""Tokenizers that real models have and the zoo's does not: digit-split numbers and word-level vocabularies with
an unknown token; tiny random Llamas that use them, in memory or saved as a model directory for the CLI.

`word_level(missing=...)` is a WordLevel tokenizer over every succession-task word (numbers excluded) plus the
ten digits, whose pre-tokenizer splits on whitespace and then into single digits ("12" -> "1", "2"), as
SmolLM2 and Llama 3 do; `missing` words are left out of the vocabulary, so they encode as `[UNK]`. Whitespace
is not a token, so " Monday" and "Monday" encode alike (the bare variant is the spaced one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmscope.data.sequences import ALL_TASKS

EXTRA_WORDS = ("[UNK]", "<s>", "</s>", ".", ",", "the", "after", "comes", "list", "reads", "cat", "saw", "is")


def word_level(missing: tuple[str, ...] = ()) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for task, items in ALL_TASKS.items() if task != "numbers" for w in items} - set(missing))
    vocab = [*EXTRA_WORDS, *(str(d) for d in range(10)), *(w for w in words if w not in EXTRA_WORDS)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


def tiny_llama(vocab: int, *, tie: bool = True, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=48, vocab_size=vocab, max_position_embeddings=128, bos_token_id=1,
                      eos_token_id=2, pad_token_id=2, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).eval()


def saved_model(directory: Path, missing: tuple[str, ...] = ()) -> Path:
    """A tiny random Llama with the word-level digit-split tokenizer, saved as an HF model directory."""
    tok = word_level(missing)
    tiny_llama(len(tok)).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def tiny_gemma3(vocab: int = 61, seed: int = 0) -> torch.nn.Module:
    """A random Gemma 3 text model (a local and a global layer) with random norm gains."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                           sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                           bos_token_id=2, eos_token_id=1, pad_token_id=0)
    hf = Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0, 0.5)
    return hf.eval()
