"""The fused training kernels equal plain autograd on the same math, on both of the ReLU kernel's paths."""

from __future__ import annotations

import pytest
import torch

from lmscope.dictionary import kernels
from lmscope.dictionary.kernels import relu_dictionary, topk_decode, topk_encode


def _params(d: int = 12, m: int = 40, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(d, m), (m,), (d,), (m, d), (d,)]
    return [(torch.randn(*s, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True) for s in shapes]


def _reference(x: torch.Tensor, W_enc, b_enc, b_dec_in, W_dec, b_dec):  # type: ignore[no-untyped-def]
    z = torch.relu((x - b_dec_in) @ W_enc + b_enc)
    return z @ W_dec + b_dec, z.sum(0), (z > 0).sum(0)


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_relu_dictionary_matches_autograd(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "SPARSE_MAX_DENSITY", 0.0 if path == "dense" else 1.0)
    x = torch.randn(30, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    params = _params()
    params[1].data -= 1.0  # most codes off, as in a trained SAE: the sparse path sees real zeros
    y, s, fires = relu_dictionary(x, *params)
    y_ref, s_ref, fires_ref = _reference(x, *params)
    assert float((fires_ref > 0).double().mean()) > 0.05 and float(fires_ref.sum()) < 0.5 * 30 * 40
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(s, s_ref)
    assert torch.equal(fires.long(), fires_ref)
    g_y = torch.randn_like(y)
    w = torch.randn(40, dtype=torch.float64)
    grads = torch.autograd.grad((y * g_y).sum() + (s * w).sum(), [x, *params])
    grads_ref = torch.autograd.grad((y_ref * g_y).sum() + (s_ref * w).sum(), [x, *params])
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want)


def test_relu_dictionary_takes_the_sparse_path_only_for_sparse_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[bool] = []
    real = torch.Tensor.to_sparse_csr
    monkeypatch.setattr(torch.Tensor, "to_sparse_csr", lambda self: taken.append(True) or real(self))
    x = torch.randn(30, 12, dtype=torch.float64)
    params = _params()
    relu_dictionary(x, *params)  # about half the codes fire
    assert not taken
    params[1].data -= 4.0
    relu_dictionary(x, *params)
    assert taken


def test_topk_kernels_match_autograd() -> None:
    x = torch.randn(20, 12, dtype=torch.float64).requires_grad_(True)
    W_enc, b_enc, b_dec_in, W_dec, b_dec = _params()
    vals, idx = topk_encode(x, W_enc, b_enc, b_dec_in, 5)
    y = topk_decode(vals, idx, W_dec, b_dec)
    pre = (x - b_dec_in) @ W_enc + b_enc
    top = pre.topk(5, dim=-1)
    assert torch.equal(torch.sort(idx, 1).values, torch.sort(top.indices, 1).values)
    z = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    y_ref = z @ W_dec + b_dec
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    params = [x, W_enc, b_enc, b_dec_in, W_dec, b_dec]
    for got, want in zip(torch.autograd.grad((y * g).sum(), params), torch.autograd.grad((y_ref * g).sum(), params),
                         strict=True):
        torch.testing.assert_close(got, want)


def test_scratch_buffer_is_reused_without_aliasing_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """The [batch, d_sae] pre-activations live in one reused buffer; nothing a kernel returns may point into it."""
    W_enc, b_enc, b_dec_in, W_dec, b_dec = (p.detach() for p in _params())
    x1, x2 = torch.randn(30, 12, dtype=torch.float64), torch.randn(30, 12, dtype=torch.float64)
    vals1, idx1 = topk_encode(x1, W_enc, b_enc, b_dec_in, 5)
    first = (vals1.clone(), idx1.clone())
    spare = kernels._SPARE[(torch.float64, torch.device("cpu"))]
    topk_encode(x2, W_enc, b_enc, b_dec_in, 5)
    assert kernels._SPARE[(torch.float64, torch.device("cpu"))].data_ptr() == spare.data_ptr()  # reused
    assert torch.equal(vals1, first[0]) and torch.equal(idx1, first[1])
    monkeypatch.setattr(kernels, "SPARSE_MAX_DENSITY", 1.0)  # the sparse path, which gives its buffer back
    y1, s1, n1 = relu_dictionary(x1, W_enc, b_enc - 1.0, b_dec_in, W_dec, b_dec)
    saved = (y1.clone(), s1.clone(), n1.clone())
    relu_dictionary(x2, W_enc, b_enc - 1.0, b_dec_in, W_dec, b_dec)
    assert all(torch.equal(a, b) for a, b in zip((y1, s1, n1), saved, strict=True))
