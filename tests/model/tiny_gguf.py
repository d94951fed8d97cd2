"""Tiny GGUF checkpoints written by the tests themselves (gguf's GGUFWriter): a 2-layer Llama with a
SmolLM2-like byte-level BPE tokenizer in the metadata, some tensors Q8_0-quantized as real files are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "o n", "Ġ c", "a t", "Ġc at"]
TEXT = "the cat sat on the mat in the hat"


def write_tiny_gguf(path: Path, *, add_bos: bool = False, seed: int = 0, n_layers: int = 2,
                    skip: tuple[str, ...] = ()) -> Path:
    """A llama GGUF: vocab = 3 specials + 256 bytes + merges, d_model 64, 4 heads / 2 KV heads, SwiGLU 96.

    `add_bos`: the tokenizer adds its BOS (`<|im_start|>`, as SmolLM2 names it) to every text; `skip`:
    tensor names left out of the file.
    """
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    tokens = SPECIALS + [byte_chars[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))  # 3 = control, 1 = normal
    d, heads, kv, ff = 64, 4, 2, 96
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("lmscope tiny test llama")
    w.add_block_count(n_layers)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(add_bos)
    rng = np.random.default_rng(seed)

    def tensor(name: str, shape: tuple[int, ...], quantize: bool = False) -> None:
        if name in skip:
            return
        a = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if quantize:
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf.quantize(a, q8), raw_dtype=q8)
        else:
            w.add_tensor(name, a)

    head_dim = d // heads
    tensor("token_embd.weight", (len(tokens), d), quantize=True)
    for layer in range(n_layers):
        tensor(f"blk.{layer}.attn_norm.weight", (d,))
        tensor(f"blk.{layer}.attn_q.weight", (d, d), quantize=True)
        tensor(f"blk.{layer}.attn_k.weight", (kv * head_dim, d), quantize=True)
        tensor(f"blk.{layer}.attn_v.weight", (kv * head_dim, d))
        tensor(f"blk.{layer}.attn_output.weight", (d, d), quantize=True)
        tensor(f"blk.{layer}.ffn_norm.weight", (d,))
        tensor(f"blk.{layer}.ffn_gate.weight", (ff, d), quantize=True)
        tensor(f"blk.{layer}.ffn_up.weight", (ff, d))
        tensor(f"blk.{layer}.ffn_down.weight", (d, ff), quantize=True)
    tensor("output_norm.weight", (d,))
    tensor("output.weight", (len(tokens), d), quantize=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
