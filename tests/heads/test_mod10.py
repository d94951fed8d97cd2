"""Mod-10 features and vector arithmetic on a hand-built model whose numbers are "tens + units" vectors.

Every number token n = 10q + r (both variants) embeds as `u_r + t_q` (orthonormal directions); head 1.0's
OV circuit maps `u_r -> u_{r+1 mod 10}` and keeps `t_q`; embeddings are tied, so the head's logit for m is
`[r_m = r + 1] + [q_m = q]`. Ground truth: residue r's feature is `u_r`; an edit of n to residue j lands on
`u_j + t_q`, whose successor `10q + j + 1` the head outputs exactly when j < 9.
"""

from __future__ import annotations

import pytest
import torch

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.heads.arithmetic import residue_pairs, vector_arithmetic
from lmscope.heads.mod10 import mod10_features, number_tokens
from lmscope.heads.succession import _select_tasks, task_tokens
from tiny_models import tiny_hooked_with_tokenizer


@pytest.fixture(scope="module")
def tens_units() -> tuple[HookedModel, torch.Tensor]:
    model = tiny_hooked_with_tokenizer(n_embd=64, n_head=2)
    g = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.cat([torch.ones(64, 1), torch.randn(64, 30, generator=g)], 1)).Q[:, 1:]
    units, tens = basis[:, :10], basis[:, 10:30]  # [64, 10], [64, 20]
    groups, _ = task_tokens(model.tokenizer, _select_tasks(None))
    with torch.no_grad():
        wte = model.adapter.embed().weight
        wte.zero_()
        for grp in (g for g in groups if g.task == "numbers"):
            wte[grp.ids] = (units[:, grp.items % 10] + tens[:, grp.items // 10]).T
        shift = torch.zeros(30, 30)  # in (units, tens) coordinates
        for r in range(10):
            shift[(r + 1) % 10, r] = 1.0
        shift[10:, 10:] = torch.eye(20)
        attn = model.adapter.attn(1)
        d = 64
        attn.c_attn.weight[:, 2 * d:3 * d] = 0
        attn.c_attn.bias[2 * d:3 * d] = 0
        attn.c_attn.weight[:, 2 * d:2 * d + 30] = basis  # z = coordinates
        attn.c_proj.weight.zero_()
        attn.c_proj.weight[:30] = (basis @ shift).T  # back to the residual, shifted
        mlp0 = model.adapter.mlp(0)
        mlp0.c_proj.weight.zero_()
        mlp0.c_proj.bias.zero_()
    return model, units


@pytest.fixture(scope="module")
def features(tens_units):  # type: ignore[no-untyped-def]
    return mod10_features(tens_units[0], 1, 0, seeds=(0, 1), d_sae=96, mode="raw")


def test_mod10_features_are_the_units_directions(tens_units, features) -> None:  # type: ignore[no-untyped-def]
    _, units = tens_units
    result = features
    cos = torch.nn.functional.cosine_similarity(result.directions, units.T, dim=-1)
    assert cos.min() > 0.9, cos
    assert all(f["coverage"] > 0.9 for f in result.features)
    assert all(f["agreement"] == 1.0 for f in result.features)  # both seeds find the same direction
    assert result.probe["accuracy"] == 1.0
    # stratified split: 40 numbers per residue (both variants), three quarters of each residue trained on
    assert result.probe["n_train"] == 300 and result.probe["n_test"] == 100
    assert result.probe["mean_cosine"] > 0.5
    d = result.to_dict()
    assert d["head"] == {"layer": 1, "head": 0} and len(d["features"]) == 10 and len(d["choices"]) == 2


def test_vector_arithmetic_matches_the_closed_form(tens_units, features) -> None:  # type: ignore[no-untyped-def]
    model, _ = tens_units
    one = vector_arithmetic(model, features, from_residue=3, to_residue=7, tasks=["numbers"], mode="raw")
    assert one.rates["numbers"] == 1.0  # 7 < 9: every edit lands on its successor
    assert one.n_edits["numbers"] == 2 * 20  # 3, 13, ..., 193 in both variants
    every = vector_arithmetic(model, features, tasks=["numbers"], mode="raw")
    values = [int(v) for grp in number_tokens(model) for v in grp.values]
    kept = set(values)
    edits = [(v, j) for v in values for j in range(10) if j != v % 10 and (v - v % 10 + j + 1) in kept]
    expected = sum(j < 9 for _, j in edits) / len(edits)
    assert every.n_edits["numbers"] == len(edits)
    assert every.rates["numbers"] == pytest.approx(expected)
    assert set(every.by_k) == {0.5, 1.0, 1.5, 2.0, 3.0}


def test_bad_residues() -> None:
    with pytest.raises(InputError, match=r"^from_residue: got 10, expected a residue 0-9$"):
        residue_pairs(10, 2)
    with pytest.raises(InputError, match=r"^to_residue: expected a residue 0-9, got None; give both residues, or "
                                          r"neither for every pair$"):
        residue_pairs(3, None)
    with pytest.raises(InputError, match=r"^from_residue: expected a residue 0-9, got None; give both"):
        residue_pairs(None, 3)
    with pytest.raises(InputError, match=r"^to_residue: got 4, the residue the edit starts from; an edit needs two "
                                          r"different residues$"):
        residue_pairs(4, 4)
    assert len(residue_pairs(None, None)) == 90
