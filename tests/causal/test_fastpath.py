"""The layer- and position-skipping patching path (built on `lmscope.model.window`) on every family it supports,
with transformers' current cache API: no deprecation warning (as a Python warning or a transformers log line),
and the same numbers as patching one component at a time on the whole forward pass."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from lmscope import HookedModel
from lmscope.causal import Component, Continuation, patch_sweep, standard_components
from lmscope.errors import InputError
from lmscope.model.window import base_run
from patching_reference import one_patch_at_a_time
from tiny_models import tiny_hf_model


def _gemma3(sliding_window: int) -> nn.Module:
    """A random-init Gemma 3 text model: layer 0 local (sliding window), layer 1 global."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=8, intermediate_size=48, vocab_size=61, max_position_embeddings=64,
                           sliding_window=sliding_window, layer_types=["sliding_attention", "full_attention"],
                           bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return Gemma3ForCausalLM(cfg).eval()


def _model(family: str) -> HookedModel:
    if family == "gemma3":
        return HookedModel(_gemma3(sliding_window=16))  # longer than the inputs: the cached path runs
    if family == "gemma3-short-window":
        return HookedModel(_gemma3(sliding_window=4))  # shorter than the inputs: whole sequences run
    return HookedModel(tiny_hf_model(family))


@pytest.fixture
def no_deprecations() -> Iterator[list[str]]:
    """Every Python warning is an error, and transformers' own log lines are collected: it logs some
    deprecations with `logger.warning_once` instead of `warnings.warn` (the suite runs transformers at
    verbosity "error", and `warning_once` remembers what it said: both are undone here)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return logits[:, 5] - logits[:, 7]


FAMILIES = ["gpt2", "gpt_neox", "llama", "gemma3", "gemma3-short-window"]


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_patching_is_exact_and_warns_about_nothing(family: str, no_deprecations: list[str]) -> None:
    model = _model(family)
    g = torch.Generator().manual_seed(0)
    base, source = torch.randint(1, 61, (5, 7), generator=g), torch.randint(1, 61, (5, 7), generator=g)
    _, _, kv = base_run(model, base, torch.full((5,), 6), [], want_kv=True)
    assert (kv is None) == (family == "gemma3-short-window")  # a window shorter than the inputs: no cache
    comps = (standard_components(2, 4, "heads,mlp,attn,resid", position=None)
             + standard_components(2, 4, "heads,mlp,resid", position=3) + standard_components(2, 4, "heads,resid")
             + [Component.of(["blocks.1.mlp.hook_post:3", "blocks.0.attn:1@2"], label="mixed")])
    fast = patch_sweep(model, base, source, comps, _metric, max_rows=17)
    naive_t = one_patch_at_a_time(model, base, source, comps, _metric)
    torch.testing.assert_close(fast.effects, naive_t, atol=1e-5, rtol=0)
    assert not [line for line in no_deprecations if "deprecat" in line.lower()], no_deprecations


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_greedy_continuation_warns_about_nothing(family: str, no_deprecations: list[str]) -> None:
    model = _model(family)
    g = torch.Generator().manual_seed(1)
    base, source = torch.randint(1, 61, (3, 5), generator=g), torch.randint(1, 61, (3, 5), generator=g)

    def fingerprint(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return (tokens.float() * torch.arange(1, tokens.shape[1] + 1)).sum(1)

    result = patch_sweep(model, base, source, standard_components(2, 4, "resid"), Continuation(4, fingerprint))
    ids = base.clone()  # the unpatched continuation, decoded step by step on whole sequences
    for _ in range(4):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(result.y_base, fingerprint(ids[:, 5:], torch.arange(3)))
    assert not [line for line in no_deprecations if "deprecat" in line.lower()], no_deprecations


def test_a_continuation_past_the_sliding_window_is_refused() -> None:
    model = HookedModel(_gemma3(sliding_window=8))
    base = torch.randint(1, 61, (2, 6), generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match=r"sliding attention window \(8\)"):
        patch_sweep(model, base, base, ["blocks.0.hook_resid_pre"], Continuation(4, lambda t, i: t[:, 0].float()))
