"""The OV circuit of every head read through the unembedding: what the weight-based head scores share.

A head's OV logits for an input `x` (an effective token embedding, see `effective_embeddings`) are

    LN1_l(x) @ W_V[l, h] @ W_O[l, h] @ P_l @ W_U'

- `LN1_l`: the head's own input norm, applied as in the forward pass.
- `P_l`: the gain of a norm between the attention output and the residual stream, where the family has one
  (Gemma's `post_attention_layernorm`), with its per-token scale frozen (a positive factor per input, which
  no argmax over tokens sees). Only with `fold_ln=True`.
- `W_U'`: with `fold_ln=True` (the default, as TransformerLens loads models) the unembedding read through
  the final norm: its per-dimension gain folded in (`gain[:, None] * W_U`) and, for a norm that centres
  (LayerNorm), each column centred over `d_model` (TransformerLens's `center_writing_weights`, seen from the
  reading side). That is the linear part of the final norm with its per-position scale frozen, which is
  how the model itself reads any residual direction; so a reparametrisation that moves the gain between
  the final norm and `W_U` leaves every score unchanged. `fold_ln=False` reads the raw `W_U` (the paper's
  formula, and TransformerLens with weight processing off).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.norms import final_norm_gain, norm_parts

MODES: tuple[str, ...] = ("auto", "raw", "mlp0", "mlp0_no_ln", "mlp0_with_attn")
"""Effective-embedding modes; see `effective_embeddings` ("auto": `input_mode`)."""


def _gain(norm: nn.Module | None) -> Tensor | None:
    """The per-dimension multiplier of a norm as applied (Gemma: `1 + weight`), None without a norm or weight."""
    if norm is None:
        return None
    return norm_parts(norm).weight


def unembedding(model: HookedModel, ids: Tensor | Sequence[int] | None = None, *, fold_ln: bool = True) -> Tensor:
    """`W_U [d_model, k]` (float32) over the columns `ids [k]` (all of them when None), as weight-based scores
    read it: with `fold_ln`, through the final norm (gain folded in, columns centred where it centres)."""
    W_U = model.W_U.float()
    if ids is not None:
        W_U = W_U[:, torch.as_tensor(ids, dtype=torch.long).to(W_U.device)]
    if not fold_ln:
        return W_U
    W_U = final_norm_gain(model).float().to(W_U.device)[:, None] * W_U
    if norm_parts(model.adapter.ln_final()).centers:
        W_U = W_U - W_U.mean(0, keepdim=True)
    return W_U


def head_W_O(model: HookedModel, *, fold_ln: bool = True) -> Tensor:
    """`W_O [layer, head, d_head, d_model]` float32; with `fold_ln`, times the gain of the norm between the
    attention output and the residual stream where the family has one (Gemma)."""
    W_O = model.W_O.float()
    if not fold_ln:
        return W_O
    gains = [_gain(model.adapter.attn_post_norm(layer)) for layer in range(model.cfg.n_layers)]
    if all(g is None for g in gains):
        return W_O
    scale = torch.stack([torch.ones(model.cfg.d_model, device=W_O.device) if g is None else g.float().to(W_O.device)
                         for g in gains])  # [layer, d_model]
    return W_O * scale[:, None, None, :]


def input_mode(mode: str, layer: int) -> str:
    """The concrete mode for heads of `layer`: "auto" is "raw" for layer 0 (attention 0 runs before or beside
    MLP0) and "mlp0" after it; any other mode is returned as is."""
    if mode not in MODES:
        raise InputError(f"mode: got {mode!r}, expected one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "raw" if layer == 0 else "mlp0"


def _mlp0(model: HookedModel, x: Tensor) -> Tensor:
    """MLP0's contribution to the residual stream at input `x` (after its post-norm where the family has one)."""
    y = model.adapter.mlp(0)(x)
    post = model.adapter.mlp_post_norm(0)
    return y if post is None else post(y)


@torch.inference_mode()
def effective_embeddings(model: HookedModel, token_ids: Tensor | Sequence[int], *, mode: str = "auto",
                         layer: int | None = None) -> Tensor:
    """Effective token embeddings `[n, d_model]` (float32) of `token_ids [n]`, with no positional embedding.

    - "auto": what reaches a head of `layer` (required): "raw" for layer 0, "mlp0" after it.
    - "raw": the rows of `W_E`.
    - "mlp0": `x + MLP0(LN2_0(x))`, `x = W_E[t]`: the residual after MLP0 with attention 0 left out.
    - "mlp0_no_ln": `x + MLP0(x)`: MLP0 applied without its input norm.
    - "mlp0_with_attn": layer 0's output when the token attends only to itself: a one-token forward pass
      (positional embedding zeroed where the model has one) read at `blocks.0.hook_resid_post`.
    """
    if mode == "auto":
        if layer is None:
            raise InputError("mode 'auto' depends on the head's layer: pass layer=, or use layer_embeddings")
        mode = input_mode(mode, layer)
    elif mode not in MODES:
        raise InputError(f"mode: got {mode!r}, expected one of {', '.join(MODES)}")
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=model.device).reshape(-1)
    x = model.W_E[ids]
    if mode == "raw":
        return x.float()
    if mode == "mlp0":
        return (x + _mlp0(model, model.adapter.ln2(0)(x))).float()
    if mode == "mlp0_no_ln":
        return (x + _mlp0(model, x)).float()
    hooks = [("hook_pos_embed", lambda t, *, hook: torch.zeros_like(t))] if "hook_pos_embed" in model.hook_names \
        else []
    _, cache = model.run_with_cache(ids[:, None], names=["blocks.0.hook_resid_post"], hooks=hooks,
                                    return_logits=False, prepend_bos=False)
    return cache["blocks.0.hook_resid_post"][:, 0].float()


def layer_embeddings(model: HookedModel, token_ids: Tensor | Sequence[int], *, mode: str = "auto") -> Tensor:
    """The effective embedding each layer's heads read, `[layer, n, d_model]` (each distinct one computed once)."""
    modes = [input_mode(mode, layer) for layer in range(model.cfg.n_layers)]
    done = {m: effective_embeddings(model, token_ids, mode=m) for m in dict.fromkeys(modes)}
    return torch.stack([done[m] for m in modes])


def head_inputs(model: HookedModel, emb: Tensor) -> Tensor:
    """`emb [n, d_model]` (or one per layer, `[layer, n, d_model]`) through each layer's attention input norm:
    `[layer, n, d_model]`."""
    with torch.inference_mode():
        per_layer = [emb if emb.dim() == 2 else emb[layer] for layer in range(model.cfg.n_layers)]
        return torch.stack([model.adapter.ln1(layer)(x.to(model.W_E.dtype)).float()
                            for layer, x in enumerate(per_layer)])


def ov_factors(model: HookedModel, x: Tensor, out_ids: Tensor, *, fold_ln: bool = True) -> tuple[Tensor, Tensor]:
    """Factors of the OV logits of every head: `z [layer, head, n, d_head]` and `ou [layer, head, d_head, k]`.

    `x [layer, n, d_model]` are the head inputs; `out_ids [k]` the unembedding columns kept;
    `z[l, h] @ ou[l, h]` is `x[l] @ W_V[l, h] @ W_O[l, h] @ W_U[:, out_ids]` (read as the module docstring says).
    """
    z = torch.einsum("lnd,lhde->lhne", x, model.W_V.float())
    ou = torch.einsum("lhem,mk->lhek", head_W_O(model, fold_ln=fold_ln), unembedding(model, out_ids, fold_ln=fold_ln))
    return z, ou


def head_logits(model: HookedModel, layer: int, head: int, x: Tensor, out_ids: Tensor, *,
                fold_ln: bool = True) -> Tensor:
    """OV logits `[..., k]` of one head for effective embeddings `x [..., d_model]` over `out_ids [k]`."""
    W_O = head_W_O(model, fold_ln=fold_ln)[layer, head]
    ov = model.W_V[layer, head].float() @ W_O
    with torch.inference_mode():
        h = model.adapter.ln1(layer)(x.to(model.W_E.dtype)).float()
    return h @ ov @ unembedding(model, out_ids, fold_ln=fold_ln)


def ov_logits(model: HookedModel, token_ids: Tensor | Sequence[int], out_ids: Tensor | Sequence[int] | None = None,
              *, mode: str = "auto", fold_ln: bool = True) -> Tensor:
    """OV-circuit logits of every head, `[layer, head, n, k]`, for inputs `token_ids [n]` over `out_ids [k]`."""
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    out = ids if out_ids is None else torch.as_tensor(out_ids, dtype=torch.long).reshape(-1)
    z, ou = ov_factors(model, head_inputs(model, layer_embeddings(model, ids, mode=mode)), out, fold_ln=fold_ln)
    return z @ ou
