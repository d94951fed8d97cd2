"""Input-invariant views of transcoder features: what connects them regardless of the prompt.

- `connection(up, f, down, g)`: `W_dec_up[f] · W_enc_down[:, g]`, how much feature f, firing at 1, writes
  into feature g's pre-activation through the residual stream (the norm's per-token scale aside);
- `connections(up, down)`: the whole `[d_sae_up, d_sae_down]` matrix, and `top_connections` its largest entries;
- `de_embedding_scores`: `W_E @ W_enc[:, f]`, which tokens drive a feature directly;
- `ov_de_embedding`: `W_E @ W_V[h] @ W_O[h] @ W_enc[:, f]`, which source tokens drive it through one head;
- `logit_scores`: `W_dec[f] @ W_U`, which next tokens a feature promotes directly.

Folding (`fold=True`, the default, as TransformerLens folds its LayerNorms): a weight that reads the residual
stream through a norm reads it through the norm's gain too, so the gain is multiplied into it (`γ[:, None] * W`)
and, where the norm is a LayerNorm, the weight is centred along `d_model` (the norm removes the mean, so that
component never reaches it). `W_enc` of a transcoder on `blocks.L.ln2.hook_normalized` is read through that
MLP input norm, `W_V` through the attention's input norm, `W_U` through the final norm. Then the views are what
the frozen forward pass computes with each norm's divisor taken as 1, and a reparametrisation that moves a gain
between a norm and the weights after it (logits unchanged) leaves them unchanged. `fold=False` gives the raw
products. `connection(s)` needs the model to fold when the downstream dictionary reads a norm's output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.dictionary.modules import Dictionary
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.norms import folded_W_U, norm_of_hook, norm_parts, read_through


def unembedding(model: HookedModel, *, fold: bool = True) -> Tensor:
    """`W_U [d_model, d_vocab]` (float64) read through the final norm (folded and centred; raw with `fold=False`)."""
    W_U = folded_W_U(model, fold=fold).double()
    if fold and norm_parts(model.adapter.ln_final()).centers:
        W_U = W_U - W_U.mean(0, keepdim=True)
    return W_U


def input_norm(model: HookedModel, dictionary: Dictionary) -> nn.Module | None:
    """The norm whose output the dictionary reads (MLP input norm, final norm), None for a residual stream."""
    return norm_of_hook(model, dictionary.cfg.hook_name)


def encoder(dictionary: Dictionary, model: HookedModel | None = None, *, fold: bool = True) -> Tensor:
    """`W_enc [d_in, d_sae]` (float64) as it reads the residual stream (see the module docstring)."""
    if model is None:
        if fold and dictionary.cfg.hook_name.endswith("hook_normalized"):
            raise InputError(f"model: {dictionary.cfg.hook_name} is a norm's output; folding its gain into the "
                             "encoder needs the model (pass model=..., or fold=False for the raw weights)")
        return dictionary.W_enc.detach().double()
    return read_through(input_norm(model, dictionary), dictionary.W_enc, fold)


def connections(up: Dictionary, down: Dictionary, *, model: HookedModel | None = None, fold: bool = True) -> Tensor:
    """`W_dec_up @ W_enc_down`: `[d_sae_up, d_sae_down]` weight-only connections between two transcoders."""
    if up.cfg.d_out != down.cfg.d_in:
        raise InputError(f"transcoders: the upstream one writes {up.cfg.d_out} dims, the downstream reads "
                         f"{down.cfg.d_in}")
    return up.W_dec.detach().double() @ encoder(down, model, fold=fold)


def connection(up: Dictionary, feature: int, down: Dictionary, target: int, *, model: HookedModel | None = None,
               fold: bool = True) -> float:
    """`W_dec_up[feature] · W_enc_down[:, target]`."""
    _check(up, feature)
    _check(down, target)
    return float(up.W_dec.detach().double()[feature] @ encoder(down, model, fold=fold)[:, target])


def top_connections(up: Dictionary, down: Dictionary, target: int, k: int = 10, *, model: HookedModel | None = None,
                    fold: bool = True) -> list[tuple[int, float]]:
    """The k upstream features with the largest |connection| into downstream feature `target`."""
    _check(down, target)
    col = up.W_dec.detach().double() @ encoder(down, model, fold=fold)[:, target]
    idx = col.abs().topk(min(k, col.numel())).indices
    return [(int(i), float(col[i])) for i in idx]


def de_embedding_scores(model: HookedModel, dictionary: Dictionary, feature: int, *, fold: bool = True) -> Tensor:
    """`[d_vocab]`: `W_E @ W_enc[:, feature]`, the encoder read through its input norm (`fold`)."""
    _check(dictionary, feature)
    return model.W_E.double() @ encoder(dictionary, model, fold=fold)[:, feature]


def ov_de_embedding(model: HookedModel, dictionary: Dictionary, feature: int, layer: int, head: int,
                    k: int = 10, *, fold: bool = True) -> list[tuple[str, float]]:
    """The k source tokens whose embeddings, moved by head (layer, head)'s OV map, drive `feature` most
    (`W_V` read through the attention's input norm and `W_enc` through the dictionary's, with `fold`)."""
    _check(dictionary, feature)
    if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
        raise InputError(f"head: ({layer}, {head}) is outside the model's {model.cfg.n_layers} layers x "
                         f"{model.cfg.n_heads} heads")
    w = encoder(dictionary, model, fold=fold)[:, feature]
    W_V = read_through(model.adapter.ln1(layer), model.W_V[layer, head], fold)
    scores = model.W_E.double() @ (W_V @ (model.W_O[layer, head].double() @ w))
    return _top_tokens(model, scores, k)


def logit_scores(model: HookedModel, dictionary: Dictionary, feature: int, *, fold: bool = True) -> Tensor:
    """`[d_vocab]`: `W_dec[feature] @ W_U`, the logits the feature's output adds directly (final norm folded)."""
    _check(dictionary, feature)
    if dictionary.cfg.d_out != model.cfg.d_model:
        raise InputError(f"dictionary: it writes {dictionary.cfg.d_out} dims, the model's d_model is "
                         f"{model.cfg.d_model}")
    return dictionary.W_dec.detach().double()[feature] @ unembedding(model, fold=fold)


def feature_readout(model: HookedModel, transcoders: Mapping[int, Dictionary], nodes: list[dict[str, Any]],
                    k: int = 8, n_tokens: int = 6, *, fold: bool = True) -> list[dict[str, Any]]:
    """The k feature nodes (graph node dicts) with the largest |value|, each with its top de-embedding tokens
    and the next tokens it promotes most directly (`logit_tokens`)."""
    feats = sorted((n for n in nodes if n["kind"] == "feature"), key=lambda n: -abs(n["value"]))[:k]
    if not feats or model.tokenizer is None:
        return [{**n, "de_embedding": [], "logit_tokens": []} for n in feats]
    # one product per view for all features: a real vocabulary's W_E and W_U in float64 are 200+ MB each
    for n in feats:
        _check(transcoders[n["layer"]], n["index"])
    enc = torch.stack([encoder(transcoders[n["layer"]], model, fold=fold)[:, n["index"]] for n in feats], 1)
    dec = torch.stack([transcoders[n["layer"]].W_dec.detach().double()[n["index"]] for n in feats])
    de_emb = model.W_E.double() @ enc  # [d_vocab, k]
    logits = dec @ unembedding(model, fold=fold)  # [k, d_vocab]
    return [{**n, "de_embedding": _top_tokens(model, de_emb[:, i], n_tokens),
             "logit_tokens": _top_tokens(model, logits[i], n_tokens)} for i, n in enumerate(feats)]


def _top_tokens(model: HookedModel, scores: Tensor, k: int) -> list[tuple[str, float]]:
    top = scores.topk(min(k, scores.numel()))
    return [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices, strict=True)]


def _check(dictionary: Dictionary, feature: int) -> None:
    if not 0 <= feature < dictionary.cfg.d_sae:
        raise InputError(f"feature: {feature} is outside 0..{dictionary.cfg.d_sae - 1}")
