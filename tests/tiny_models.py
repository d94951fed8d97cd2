"""Tiny random-init HF models of every supported family, for fast tests."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_hf_model(family: str, **overrides: object) -> torch.nn.Module:
    """A random-init HF causal LM of `family` small enough for fast tests (vocab 61, 2 layers, d 32)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(0)
    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if family == "gpt2":
        cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=61, n_positions=64, **ids, **overrides)
        return GPT2LMHeadModel(cfg).eval()
    if family == "gpt_neox":
        cfg = GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                            vocab_size=61, max_position_embeddings=64, **ids, **overrides)
        return GPTNeoXForCausalLM(cfg).eval()
    if family == "llama":
        cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=48, vocab_size=61, max_position_embeddings=64, **ids, **overrides)
        return LlamaForCausalLM(cfg).eval()
    raise ValueError(family)


def tiny_hooked_with_tokenizer(n_samples: int = 1500, **overrides: object):  # type: ignore[no-untyped-def]
    """A random-init tiny GPT-2 with the synthetic corpus's tokenizer, wrapped in a HookedModel
    (`overrides` change the GPT2Config: n_embd, n_head...)."""
    from lmscope import HookedModel
    from lmscope.data.synthetic import generate_corpus
    from lmscope.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(generate_corpus(n_samples, seed=0))
    return HookedModel(_gpt2(len(tokenizer), **overrides), tokenizer)


def _gpt2(vocab: int, **overrides: object) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    shape = {"n_layer": 2, "n_embd": 32, "n_head": 4} | overrides
    cfg = GPT2Config(vocab_size=vocab, n_positions=128, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                     **shape)  # type: ignore[arg-type]
    return GPT2LMHeadModel(cfg).eval()


def save_with_random_transcoders(model, root, d_sae: int):  # type: ignore[no-untyped-def]
    """Save `model` (HF layout + tokenizer) to `root/model` and one random transcoder per layer (seed = layer,
    b_enc 0.05 so features fire) to `root/tcs`: what `lmscope circuit` reads. Returns both paths."""
    from lmscope.dictionary import DictConfig, Dictionary
    from lmscope.dictionary.stack import save_transcoders

    model.hf.save_pretrained(root / "model")
    model.tokenizer.save_pretrained(root / "model")
    tcs = {}
    for layer in range(model.cfg.n_layers):
        cfg = DictConfig(kind="transcoder", d_in=model.cfg.d_model, d_sae=d_sae,
                         hook_name=f"blocks.{layer}.ln2.hook_normalized", hook_name_out=f"blocks.{layer}.hook_mlp_out")
        tc = Dictionary(cfg, generator=torch.Generator().manual_seed(layer))
        with torch.no_grad():
            tc.b_enc.fill_(0.05)
        tcs[layer] = tc
    save_transcoders(tcs, root / "tcs")
    return root / "model", root / "tcs"


def save_identity_sae(d: int, hook: str, path: object, shift: float = -1000.0) -> None:
    """An SAE whose feature i is coordinate i of `hook` minus `shift` (W_enc = W_dec = I, b_dec = shift, so a
    ReLU never clips for |activations| < |shift|): patching feature i is patching coordinate i of the hook."""
    from lmscope.dictionary import DictConfig, Dictionary, save_dictionary

    sae = Dictionary(DictConfig(kind="sae", d_in=d, d_sae=d, hook_name=hook))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.fill_(shift)
    save_dictionary(sae, path)  # type: ignore[arg-type]


def save_crate_and_gpt(root: Path, *, n_layer: int = 2, ista_expansion: int = 2, n_samples: int = 1500) -> str:
    """A tiny CRATE and a tiny GPT-2 sharing one tokenizer, saved as plain HF directories under `root` (not zoo
    models); returns their `--models` value."""
    from lmscope.data.tokenizer import save_tokenizer
    from lmscope.model.crate import CrateForCausalLM
    from lmscope.model.crate_config import CrateConfig

    gpt = tiny_hooked_with_tokenizer(n_samples)
    torch.manual_seed(0)
    crate = CrateForCausalLM(CrateConfig(vocab_size=gpt.cfg.d_vocab, n_positions=128, n_embd=32, n_layer=n_layer,
                                         n_head=4, ista_expansion=ista_expansion))
    for name, hf in (("crate", crate), ("gpt", gpt.hf)):
        hf.save_pretrained(root / name)
        save_tokenizer(gpt.tokenizer, root / name)
    return f"{root / 'crate'},{root / 'gpt'}"
