"""Planted sparse features (toy models of superposition) shared by the dictionary tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor


def unit_rows(m: int, d: int, g: torch.Generator) -> Tensor:
    D = torch.randn(m, d, generator=g)
    return D / D.norm(dim=1, keepdim=True)


def planted_codes(n: int, m: int = 64, p: float = 3 / 64, seed: int = 0) -> Tensor:
    """`[n, m]` nonnegative codes, each entry active with probability p (about 3 of 64 per row)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, m, generator=g) * (torch.rand(n, m, generator=g) < p)


def mean_max_cos(true: Tensor, learned: Tensor) -> float:
    """Mean over true directions of the best cosine similarity with any learned row."""
    L = learned / learned.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float((true @ L.T).max(1).values.mean())


class Planted:
    """The helpers above, handed to tests as the `planted` fixture (conftest modules are not importable)."""

    unit_rows = staticmethod(unit_rows)
    codes = staticmethod(planted_codes)
    mean_max_cos = staticmethod(mean_max_cos)


@pytest.fixture
def planted() -> type[Planted]:
    return Planted


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These matrices are tiny: one thread is faster than two and immune to a busy neighbour on the cores
    (two OpenMP threads wait on each other at every op when one core is taken)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
