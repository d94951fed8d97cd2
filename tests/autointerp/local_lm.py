"""A tiny random-init Llama with a byte-level tokenizer built here, as a local explainer/simulator for tests.

Every byte is one token (no merges), so digits 0-9, TAB and newline are single tokens as the all-at-once
simulator needs; a small chat template makes the chat path run too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant: {% endif %}")


def byte_tokenizer(chat: bool = True) -> Any:
    """A fast HF tokenizer with one token per byte plus <s> (BOS), </s> (EOS) and <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab: int, seed: int = 0) -> Any:
    """A 2-layer Llama (d_model 32, untied unembedding), random init from `seed`, in float32 eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=False, bos_token_id=vocab - 3, eos_token_id=vocab - 2,
                      pad_token_id=vocab - 1)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # a larger unembedding: peaked next-token distributions, no near-ties in greedy decoding
        model.lm_head.weight.mul_(40.0)
    return model.eval()


def tiny_pair(chat: bool = True, seed: int = 0) -> tuple[Any, Any]:
    tok = byte_tokenizer(chat)
    return tiny_llama(len(tok), seed), tok


def save_tiny(path: Path) -> Path:
    """The tiny pair saved as a plain HF directory (safetensors), what `--llm-model DIR` reads."""
    model, tok = tiny_pair()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
