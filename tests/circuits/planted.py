"""A hand-built two-layer GPT-2 whose transcoders are exact and whose one circuit is planted.

Feature a (layer 0, feature 0) reads the trigger token's embedding direction d1 and writes d2. Feature b
(layer 1, feature 0) reads `W_RES · d2 + W_HEAD · d4`. Head 1.0 has uniform attention (zero QK) and an OV
map `d2 -> V_GAIN · O_GAIN · d4`. Every other weight and bias is zero, LayerNorms are the identity affine map, and
each MLP is ReLU with the transcoder's own weights, so transcoder errors are exactly zero. On the prompt
[TRIG, OTHER, TRIG], b at position 2 is fed by a at position 2 through the residual stream and by a at
positions 0 and 2 through head 1.0 (weight 1/3 each), and by nothing else.

With `error_gain` E, MLP 0 has a second neuron that the transcoder lacks: it reads what a reads and writes
`E · d4`, so transcoder 0's error at a trigger position is exactly `z_a · E · d4`, which b reads through the
residual stream (head 1.0 reads only d2, so the error does not pass through it). `by_hand(E)` gives every
planted quantity from the weights alone.
"""

from __future__ import annotations

import math

import torch

from lmscope import HookedModel
from lmscope.dictionary import DictConfig, Dictionary

D, D_SAE, TRIG, OTHER = 8, 4, 1, 2
W_IN, W_OUT, W_RES, W_HEAD, V_GAIN, O_GAIN, TRIG_SCALE = 1.5, 2.0, 0.7, 1.3, 0.9, 1.1, 2.0
PROMPT = torch.tensor([[TRIG, OTHER, TRIG]])
EPS = 1e-5


def direction(i: int, j: int) -> torch.Tensor:
    """`(e_i − e_j)/√2`: a unit vector with mean zero, so LayerNorm's centring leaves it alone."""
    v = torch.zeros(D)
    v[i], v[j] = 1 / math.sqrt(2), -1 / math.sqrt(2)
    return v


d0, d1, d2, d4 = direction(6, 7), direction(0, 1), direction(2, 3), direction(4, 5)


def transcoder(layer: int, enc: torch.Tensor, dec: torch.Tensor) -> Dictionary:
    cfg = DictConfig(kind="transcoder", d_in=D, d_sae=D_SAE, hook_name=f"blocks.{layer}.ln2.hook_normalized",
                     hook_name_out=f"blocks.{layer}.hook_mlp_out")
    tc = Dictionary(cfg)
    with torch.no_grad():
        for p in tc.parameters():
            p.zero_()
        tc.W_enc[:, 0], tc.W_dec[0] = enc, dec
    return tc


def planted(error_gain: float = 0.0) -> tuple[HookedModel, dict[int, Dictionary]]:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=D, n_head=2, n_inner=D_SAE, vocab_size=4, n_positions=8,
                     activation_function="relu", layer_norm_epsilon=EPS, bos_token_id=0, eos_token_id=0,
                     pad_token_id=0, tie_word_embeddings=False)
    hf = GPT2LMHeadModel(cfg).eval()
    tcs = {0: transcoder(0, W_IN * d1, W_OUT * d2), 1: transcoder(1, W_RES * d2 + W_HEAD * d4, d1)}
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.fill_(1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0)
        t = hf.transformer
        t.wte.weight[TRIG] = TRIG_SCALE * d1
        t.wpe.weight[:] = d0
        t.h[1].attn.c_attn.weight[:, 2 * D] = V_GAIN * d2  # head 0's first value dimension reads d2
        t.h[1].attn.c_proj.weight[0] = O_GAIN * d4  # ... and is written along d4
        hf.lm_head.weight[:] = torch.randn(4, D, generator=torch.Generator().manual_seed(0))
        for layer, tc in tcs.items():  # the MLPs are the transcoders: errors are exactly zero
            mlp = t.h[layer].mlp
            mlp.c_fc.weight.copy_(tc.W_enc)
            mlp.c_proj.weight.copy_(tc.W_dec)
        t.h[0].mlp.c_fc.weight[:, 1] = W_IN * d1  # the neuron no transcoder feature has: the error
        t.h[0].mlp.c_proj.weight[1] = error_gain * d4
    return HookedModel(hf, None), tcs


def sigma(x: torch.Tensor) -> float:
    """LayerNorm's scale of one residual vector."""
    return math.sqrt(float(x.double().var(unbiased=False)) + EPS)


def by_hand(error_gain: float = 0.0) -> dict[str, float]:
    """Every planted quantity, from the weights alone: a's activation, b's value at position 2 and its three
    routes (`residual`: a@2 directly; `head`: a@0 or a@2 through head 1.0, each; `error`: transcoder 0's error
    at position 2), each with the LayerNorm scales of the clean run."""
    x = TRIG_SCALE * d1 + d0  # the residual at a trigger position after layer 0's (zero) attention
    z_a = W_IN * TRIG_SCALE / sigma(x)  # ln2 leaves mean-zero directions alone: d1 · ln(x) = 2 / σ
    pre1 = x + z_a * W_OUT * d2 + z_a * error_gain * d4  # after MLP 0 at trigger positions; OTHER's is d0 alone
    value_in = z_a * W_OUT / sigma(pre1)  # d2 · ln1(pre1): what head 1.0 reads at a trigger position
    head_out = (1 / 3) * 2 * value_in * V_GAIN * O_GAIN * d4  # uniform over 3 positions, two of them triggers
    mid = pre1 + head_out
    s_mid = sigma(mid)
    return {"z_a": z_a, "residual": z_a * W_OUT * W_RES / s_mid,
            "head": (1 / 3) * z_a * W_OUT * V_GAIN * O_GAIN * W_HEAD / (sigma(pre1) * s_mid),
            "error": z_a * error_gain * W_HEAD / s_mid,
            "value": float((W_RES * d2 + W_HEAD * d4) @ mid) / s_mid,
            # with every feature removed and the error kept: the residual is x + error at position 2
            "none_live": z_a * error_gain * W_HEAD / sigma(x + z_a * error_gain * d4)}
