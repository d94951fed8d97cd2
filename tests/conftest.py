"""Shared fixtures: tiny random-init models of every supported family, and an isolated LMSCOPE_HOME."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(2)

# Isolation: lmscope reads $LMSCOPE_HOME at call time (lmscope.model.zoo.home), so setting it here, when pytest
# imports this file and before any test module is collected, covers collection-time code, every test and every
# CLI subprocess (they inherit os.environ). The user's cache is never read or written; a model trained there can
# no longer shadow the packaged zoo weights, which ship inside the package and are always consulted.
TEST_HOME = tempfile.mkdtemp(prefix="lmscope-test-home-")
os.environ["LMSCOPE_HOME"] = TEST_HOME
os.environ.pop("LMSCOPE_ZOO_PACKAGED", None)  # a user's cold-start setting must not hide the packaged weights


@pytest.fixture(scope="session", autouse=True)
def isolated_lmscope_home() -> Iterator[str]:
    """The per-session LMSCOPE_HOME (set at import above); re-asserted for the session and removed after it."""
    os.environ["LMSCOPE_HOME"] = TEST_HOME
    yield TEST_HOME
    shutil.rmtree(TEST_HOME, ignore_errors=True)


FAMILIES = ["gpt2", "gpt_neox", "llama"]


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(1, 61, (3, 11), generator=torch.Generator().manual_seed(1))
