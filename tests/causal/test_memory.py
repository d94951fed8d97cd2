"""The patching engine and mediation in bounded memory: rows per forward cut to a byte budget, base and source
runs in row batches that keep only the last token where that is all a patch reads, and the base's keys and
values gathered one layer at a time. None of it may change a number: every budget gives the outcomes of the
whole, unbatched forward (`skip_layers=False`), on padded rows of every family with a cached path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_runner import run
from lmscope import HookedModel
from lmscope.causal import Continuation, mediate, standard_components
from lmscope.causal.data import topic_mediation_rows
from lmscope.causal.engine import Prepared, _chunk_rows, _run_batched, patched_outcomes
from lmscope.causal.scorers import lexicon_mass
from tiny_models import tiny_hf_model, tiny_hooked_with_tokenizer


def _gemma3() -> nn.Module:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=8, intermediate_size=48, vocab_size=61, max_position_embeddings=64,
                           sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                           bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return Gemma3ForCausalLM(cfg).eval()


def _padded(seed: int) -> Prepared:
    """Six right-padded rows of 4..7 tokens."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 61, (6, 7), generator=g)
    last = torch.tensor([6, 3, 5, 6, 4, 3])
    x[torch.arange(7)[None] > last[:, None]] = 0
    return Prepared(x, last)


def _metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return logits.float().log_softmax(-1)[:, 5] + index  # per-row: the row index must be the global one


PAIRS = torch.tensor([[0, 1], [1, 0], [2, 3], [3, 5], [4, 2], [5, 4], [1, 3]])


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_every_budget_gives_the_whole_forward(family: str) -> None:
    model = HookedModel(_gemma3() if family == "gemma3" else tiny_hf_model(family))
    base, source = _padded(0), _padded(1)
    comps = (standard_components(2, 4, "heads,mlp,resid") + standard_components(2, 4, "heads,mlp", position=2)
             + standard_components(1, 4, "heads", position=None))
    whole = patched_outcomes(model, base, source, PAIRS, comps, _metric, skip_layers=False)
    for max_bytes, max_rows in ((2**30, 2048), (1, 2048), (20_000, 3)):
        got = patched_outcomes(model, base, source, PAIRS, comps, _metric, max_bytes=max_bytes, max_rows=max_rows)
        torch.testing.assert_close(got.y_patched, whole.y_patched, atol=2e-5, rtol=0)
        torch.testing.assert_close(got.y_base, whole.y_base, atol=2e-5, rtol=0)
        torch.testing.assert_close(got.y_source, whole.y_source, atol=2e-5, rtol=0)
    assert (whole.y_patched - whole.y_base[PAIRS[:, 0]][:, None]).abs().mean() > 1e-3  # the patches do something


def test_a_greedy_continuation_is_the_same_under_any_budget() -> None:
    model = HookedModel(tiny_hf_model("llama"))
    base, source = _padded(2), _padded(3)

    def fingerprint(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return (tokens.float() * torch.arange(1, tokens.shape[1] + 1)).sum(1) + 100 * index

    comps = standard_components(2, 4, "heads,resid")
    big = patched_outcomes(model, base, source, PAIRS, comps, Continuation(3, fingerprint))
    small = patched_outcomes(model, base, source, PAIRS, comps, Continuation(3, fingerprint), max_bytes=1)
    assert torch.equal(big.y_patched, small.y_patched) and torch.equal(big.y_base, small.y_base)
    assert not torch.equal(big.y_patched, big.y_base[PAIRS[:, 0]][:, None].expand_as(big.y_patched))


def test_rows_per_forward_follow_the_budget_not_the_number_of_pairs() -> None:
    """The largest batch the model sees is set by `max_bytes` (here 2 rows: logits of 61 tokens and the window's
    activations), whether 7 or 70 pairs are patched; and the base and source runs go in batches too."""
    model = HookedModel(tiny_hf_model("llama"))
    base, source = _padded(0), _padded(1)
    comps = standard_components(2, 4, "heads,mlp")
    rows = _chunk_rows(model, base, -1, False, 2048, 1)
    assert rows == 1
    budget = 2 * 4 * (3 * 61 + 8 * 32 + 4 * 48 + 2 * 4 * 7 + 2 * 2 * 7 * 2 * 8)  # two rows at the last token
    assert _chunk_rows(model, base, -1, False, 2048, budget) == 2
    assert _chunk_rows(model, base, -1, True, 2048, budget) == 1  # a continuation keeps every layer's keys
    sizes: list[int] = []
    handle = model.hf.model.embed_tokens.register_forward_hook(lambda m, a, out: sizes.append(out.shape[0]))
    try:
        for n_pairs in (7, 70):
            sizes.clear()
            pairs = PAIRS.repeat(n_pairs // 7, 1)
            patched_outcomes(model, base, source, pairs, comps, _metric, max_bytes=budget)
            assert max(sizes) == 2, (n_pairs, sizes)
    finally:
        handle.remove()


def test_base_runs_in_batches_keep_only_the_last_token_where_asked() -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    x = _padded(4)
    names = ["blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"]
    y_all, whole, kv_all, _ = _run_batched(model, x, names, _metric, want_kv=True, last_only=set(), max_bytes=2**30)
    y, cache, kv, where = _run_batched(model, x, names, _metric, want_kv=True, last_only={names[0]}, max_bytes=1)
    torch.testing.assert_close(y, y_all, atol=1e-5, rtol=0)
    assert cache[names[0]].shape == (6, 1, 4, 8) and torch.equal(where[names[0]], torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(cache[names[0]][:, 0], whole[names[0]][torch.arange(6), x.last], atol=1e-6, rtol=0)
    torch.testing.assert_close(cache[names[1]], whole[names[1]], atol=1e-6, rtol=0)
    assert torch.equal(where[names[1]], x.last)
    for (k, v), (k_all, v_all) in zip(kv, kv_all, strict=True):  # type: ignore[arg-type]
        torch.testing.assert_close(k, k_all, atol=1e-6, rtol=0)
        torch.testing.assert_close(v, v_all, atol=1e-6, rtol=0)


def test_mediation_is_the_same_under_any_budget() -> None:
    model = tiny_hooked_with_tokenizer(400)
    rows = topic_mediation_rows(40, seed=0, max_per_cell=5)
    args = ([r["text"] for r in rows], [r["toxic_cue"] for r in rows], [r["topic"] for r in rows],
            standard_components(2, 4, "heads,mlp"), lexicon_mass(model, log=True))
    big = mediate(model, *args, n_boot=30, max_pairs=150, seed=3)
    small = mediate(model, *args, n_boot=30, max_pairs=150, seed=3, max_bytes=40_000, max_rows=7)
    for scheme in big.effects:
        for name in ("te", "nde", "nie"):
            for field in ("estimate", "ci_low", "ci_high"):
                assert small.effects[scheme][name][field] == pytest.approx(big.effects[scheme][name][field],
                                                                           abs=1e-6)
    assert max(abs(v) for v in big.effects["unadjusted"]["nie"]["estimate"]) > 1e-3


def test_bad_budgets_are_refused() -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    x = _padded(0)
    from lmscope.errors import InputError

    with pytest.raises(InputError, match="max_rows/max_bytes: expected positive numbers, got 2048 and 0"):
        patched_outcomes(model, x, x, PAIRS, standard_components(1, 4, "mlp"), _metric, max_bytes=0)


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("memory")
    m = tiny_hooked_with_tokenizer(400)
    m.hf.save_pretrained(d / "tiny")
    m.tokenizer.save_pretrained(d / "tiny")
    rows = topic_mediation_rows(40, seed=0, max_per_cell=5)
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "tiny", d / "rows.jsonl"


def test_cli_chunk_mb_changes_no_number(cli_inputs, capsys) -> None:  # type: ignore[no-untyped-def]
    model_dir, rows = cli_inputs
    common = ["mediate", str(model_dir), str(rows), "--treatment", "toxic_cue", "--confounder", "topic",
              "--components", "heads,mlp", "--n-boot", "20", "--max-pairs", "100", "--outcome", "log-toxicity",
              "--json"]
    code, default, err = run(capsys, *common)
    assert code == 0, err
    code, small, err = run(capsys, *common, "--chunk-mb", "1")
    assert code == 0, err
    a, b = json.loads(default)["effects"], json.loads(small)["effects"]
    assert max(abs(v) for v in a["unadjusted"]["nie"]["estimate"]) > 1e-3
    for scheme in a:
        assert b[scheme]["nie"]["estimate"] == pytest.approx(a[scheme]["nie"]["estimate"], abs=1e-6)
    code, _, err = run(capsys, *common, "--chunk-mb", "0")
    assert code == 2 and "--chunk-mb: expected an integer in 1.." in err and "got 0" in err and "patching" not in err
