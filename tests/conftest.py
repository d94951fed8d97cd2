"""Shared fixtures: tiny random-init models of every supported family, and an isolated LMSCOPE_HOME."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(2)


FAMILIES = ["gpt2", "gpt_neox", "llama"]


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(1, 61, (3, 11), generator=torch.Generator().manual_seed(1))
