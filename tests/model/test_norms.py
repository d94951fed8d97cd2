"""The frozen divisor of each supported norm reproduces the norm itself at the pass it was read from."""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from lmscope.model.norms import frozen_divisor, norm_parts


def test_layernorm_is_affine_with_the_frozen_divisor() -> None:
    torch.manual_seed(0)
    ln = nn.LayerNorm(16, eps=1e-3)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(5, 7, 16) * 3 + 1
    parts = norm_parts(ln)
    assert parts.centers and parts.eps == 1e-3 and parts.bias is not None
    div = frozen_divisor(ln, x)
    assert div.shape == (5, 7)
    rebuilt = parts.weight * (x - x.mean(-1, keepdim=True)) / div[..., None] + parts.bias
    torch.testing.assert_close(rebuilt, ln(x).detach())


def test_rmsnorm_reads_variance_epsilon_and_does_not_centre() -> None:
    torch.manual_seed(1)
    rms = LlamaRMSNorm(16, eps=1e-4)
    with torch.no_grad():
        rms.weight.normal_()
    x = torch.randn(3, 16) + 2
    parts = norm_parts(rms)
    assert not parts.centers and parts.eps == 1e-4 and parts.bias is None
    torch.testing.assert_close(parts.weight * x / frozen_divisor(rms, x)[..., None], rms(x).detach())
