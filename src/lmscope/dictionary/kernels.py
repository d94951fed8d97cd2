"""Fused TopK encoder and sparse decoder for training (same math as the dense path, fewer dense passes).

`topk_encode(x, W_enc, b_enc, b_dec_in, k)` returns `(vals, idx)`, both `[B, k]`: the `k` largest
pre-activations of `(x - b_dec_in) @ W_enc + b_enc` per row (one `addmm`, the centring folded into the
bias), ReLU'd, and their latent indices. Its backward never forms a dense `[B, d_sae]` gradient: with `G`
the `[B, d_sae]` code gradient (`B·k` nonzeros), the gradient of `W_enc` is `(G.T @ (x - b_dec_in)).T`, a
CSR × dense product (`G.T` in CSR from one stable sort of the indices; half types, which have no CPU CSR
product, use the dense product); those of `b_enc` and `b_dec_in` come from an index_add over the same
indices; that of `x` (only when asked for) is an `embedding_bag` over the columns of `W_enc`.

`relu_dictionary` is the ReLU counterpart: encoder, decoder and the column sums behind the L1 term in one
function whose backward forms the code gradient with a single `addmm` and applies ReLU's mask in place.

`topk_decode(vals, idx, W_dec, b_dec)` is `Σ_j vals[:, j] · W_dec[idx[:, j]] + b_dec` via `embedding_bag`
(dense weight gradient), equal to `scatter(vals) @ W_dec + b_dec`.

All paths are deterministic on CPU (stable sort, row-partitioned sparse product).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _csr_transpose(idx: Tensor, values: Tensor, n_cols: int) -> Tensor:
    """`G.T` as a CSR `[n_cols, B]` tensor, where `G[b, idx[b, j]] = values[b, j]` (`idx`, `values`: `[B, k]`)."""
    B, k = idx.shape
    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    crow = torch.zeros(n_cols + 1, dtype=torch.long, device=idx.device)
    torch.cumsum(torch.bincount(flat, minlength=n_cols), 0, out=crow[1:])
    cols = torch.div(order, k, rounding_mode="floor")  # the batch row of each sorted entry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, cols, values.reshape(-1)[order], size=(n_cols, B),
                                       check_invariants=False)


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec_in: Tensor, k: int) -> tuple[Tensor, Tensor]:
        pre = torch.addmm(b_enc - b_dec_in @ W_enc, x, W_enc)  # (x - b_dec_in) @ W_enc + b_enc
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        del pre
        vals = torch.relu(vals)
        ctx.save_for_backward(x, W_enc, b_dec_in, vals, idx)
        ctx.mark_non_differentiable(idx)
        return vals, idx

    @staticmethod
    def backward(ctx: Any, g_vals: Tensor, _g_idx: Tensor | None) -> tuple[Tensor | None, ...]:
        x, W_enc, b_dec_in, vals, idx = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        g = torch.where(vals > 0, g_vals, torch.zeros((), dtype=g_vals.dtype))  # ReLU backward
        g_x = g_W = g_b = g_bin = None
        if ctx.needs_input_grad[0]:
            g_x = F.embedding_bag(idx, W_enc.t().contiguous(), per_sample_weights=g, mode="sum")
        if ctx.needs_input_grad[1]:
            xc = x - b_dec_in
            if g.dtype in (torch.float32, torch.float64):
                g_W = torch.sparse.mm(_csr_transpose(idx, g, d_sae), xc).t()
            else:  # no sparse CSR product for half types: the dense product
                g_W = xc.t() @ torch.zeros(x.shape[0], d_sae, dtype=g.dtype, device=g.device).scatter_(1, idx, g)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            g_b = torch.zeros(d_sae, dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
            if ctx.needs_input_grad[3]:
                g_bin = -(W_enc @ g_b)
        return g_x, g_W, g_b if ctx.needs_input_grad[2] else None, g_bin, None


def topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec_in: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`(vals, idx)` `[B, k]`: ReLU of the `k` largest entries of `(x - b_dec_in) @ W_enc + b_enc` per row."""
    out: tuple[Tensor, Tensor] = _TopKEncode.apply(x, W_enc, b_enc, b_dec_in, k)  # type: ignore[no-untyped-call]
    return out


def topk_decode(vals: Tensor, idx: Tensor, W_dec: Tensor, b_dec: Tensor | None = None) -> Tensor:
    """`Σ_j vals[:, j] · W_dec[idx[:, j]] (+ b_dec)`: `[B, d_out]`."""
    y = F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum", sparse=False)
    return y if b_dec is None else y + b_dec


class _ReluDictionary(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec_in: Tensor, W_dec: Tensor,
                b_dec: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = torch.addmm(b_enc - b_dec_in @ W_enc, x, W_enc).relu_()
        y = torch.addmm(b_dec, z, W_dec)
        s = z.sum(0)
        ctx.save_for_backward(x, W_enc, b_dec_in, W_dec, z)
        ctx.mark_non_differentiable(z)
        return y, s, z

    @staticmethod
    def backward(ctx: Any, g_y: Tensor, g_s: Tensor, _g_z: Tensor | None) -> tuple[Tensor | None, ...]:
        x, W_enc, b_dec_in, W_dec, z = ctx.saved_tensors
        B = z.shape[0]
        need = ctx.needs_input_grad
        g_x = g_W_enc = g_b_enc = g_bin = g_W_dec = g_b_dec = None
        # gradient of the codes: the decoder's plus the (row-constant) gradient of the column sums, one addmm
        g_z = torch.addmm(g_s.expand(B, -1), g_y, W_dec.t())
        torch.ops.aten.threshold_backward.grad_input(g_z, z, 0, grad_input=g_z)  # ReLU backward, in place
        if need[0]:
            g_x = g_z @ W_enc.t()
        if need[1]:
            g_W_enc = (x - b_dec_in).t() @ g_z
        if need[2] or need[3]:
            g_b = g_z.sum(0)
            g_b_enc = g_b if need[2] else None
            g_bin = -(W_enc @ g_b) if need[3] else None
        if need[4]:
            g_W_dec = z.t() @ g_y
        if need[5]:
            g_b_dec = g_y.sum(0)
        return g_x, g_W_enc, g_b_enc, g_bin, g_W_dec, g_b_dec


def relu_dictionary(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec_in: Tensor, W_dec: Tensor,
                    b_dec: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`(ŷ, s, z)` for `z = relu((x - b_dec_in) @ W_enc + b_enc)`: `ŷ = z @ W_dec + b_dec`, the column sums
    `s = z.sum(0)` (differentiable: the decoder-norm-weighted L1 is `(s * ||W_dec||).sum()`), and `z` itself
    (not differentiable; for statistics). One fused backward: the code gradient `g_ŷ @ W_dec.T + g_s` in a
    single `addmm`, ReLU'd in place, no extra `[B, d_sae]` temporaries."""
    out: tuple[Tensor, Tensor, Tensor] = _ReluDictionary.apply(  # type: ignore[no-untyped-call]
        x, W_enc, b_enc, b_dec_in, W_dec, b_dec)
    return out
