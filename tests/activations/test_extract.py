"""Extraction into an activation store: word alignment, reading, resume, refusal, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.activations import ActivationStore, ExtractConfig, extract, read_sentences
from lmscope.activations.align import aggregate_words, encode_words
from lmscope.errors import InputError
from lmscope.fileio import default_file_mode
from tiny_models import tiny_hooked_with_tokenizer

SENTENCES = [
    ["from", "the", "year", "1732", "to", "the", "year", "1789", "."],
    ["Monday", "Tuesday", "Wednesday"],
    ["the", "xylophonist", "played", "."],
    ["5", "6", "7", "8", "9", "10"],
]


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return _with_bos(tiny_hooked_with_tokenizer())


def _with_bos(m):  # type: ignore[no-untyped-def]
    """The synthetic tokenizer adds no BOS (GPT-2 style); these tests extract with one, as the zoo models do."""
    from lmscope import HookedModel

    return HookedModel(m.hf, m.tokenizer, prepend_bos=True)


def test_word_alignment_of_split_words(model) -> None:  # type: ignore[no-untyped-def]
    ids, word_ids = encode_words(model.tokenizer, [SENTENCES[0], SENTENCES[2]])
    tokens = [model.tokenizer.decode([i]) for i in ids[0]]
    year = [t for t, w in zip(tokens, word_ids[0], strict=True) if w == 3]
    assert year == [" 17", "32"]  # the year splits into century + two digits, both belong to word 3
    assert "".join(tokens) == " ".join(SENTENCES[0])
    # a rare word splits into many pieces, its leading space (a token of its own) included
    rare = [model.tokenizer.decode([i]) for i, w in zip(ids[1], word_ids[1], strict=True) if w == 1]
    assert len(rare) > 2 and "".join(rare) == " xylophonist"
    assert sorted(set(word_ids[1].tolist())) == [0, 1, 2, 3]


def test_aggregation_by_hand() -> None:
    acts = torch.tensor([[1.0], [2.0], [4.0], [8.0], [16.0]])
    word_ids = torch.tensor([0, 1, 1, 1, 2])
    assert aggregate_words(acts, word_ids, 3, "first").flatten().tolist() == [1, 2, 16]
    assert aggregate_words(acts, word_ids, 3, "last").flatten().tolist() == [1, 8, 16]
    assert aggregate_words(acts, word_ids, 3, "mean").flatten().tolist() == pytest.approx([1, 14 / 3, 16])


@pytest.mark.parametrize("how", ["first", "last", "mean"])
def test_store_matches_direct_computation(model, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    points = ("blocks.0.mlp.hook_post", "blocks.1.hook_resid_post")
    store = extract(model, SENTENCES, tmp_path / "s", ExtractConfig(points, aggregate=how, shard_sentences=3))
    assert store.complete and store.n_rows == sum(map(len, SENTENCES)) and len(store.manifest["shards"]) == 2
    loaded = store.load()
    sent_idx, word_idx = store.row_index()
    for s, words in enumerate(SENTENCES):
        ids, word_ids = encode_words(model.tokenizer, [words])
        _, cache = model.run_with_cache(torch.tensor([[0, *ids[0]]]), names=list(points))
        for p in points:
            tok = cache[p][0, 1:]
            wid = torch.from_numpy(word_ids[0])
            spans = [(wid == w).nonzero().flatten() for w in range(len(words))]
            expected = torch.stack([_pick(tok, ix, how) for ix in spans])
            rows = (sent_idx == s).nonzero().flatten()
            assert word_idx[rows].tolist() == list(range(len(words)))
            torch.testing.assert_close(loaded[p][rows], expected, atol=1e-5, rtol=1e-5)
    assert store.sentences() == SENTENCES
    assert store.to_torch().shape == (store.n_rows, model.cfg.d_mlp + model.cfg.d_model)
    assert store.neuron_units()[model.cfg.d_mlp] == "blocks.1.hook_resid_post:0"
    sub = store.load(["blocks.0.mlp.hook_post"], neurons=[3, 7])["blocks.0.mlp.hook_post"]
    torch.testing.assert_close(sub, loaded["blocks.0.mlp.hook_post"][:, [3, 7]])


def _pick(tok: torch.Tensor, ix: torch.Tensor, how: str) -> torch.Tensor:
    return {"first": tok[ix[0]], "last": tok[ix[-1]], "mean": tok[ix].mean(0)}[how]


def test_resume_refusals_and_completed_store(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = ExtractConfig(("blocks.0.mlp.hook_post",), shard_sentences=2, dtype="float16")
    store = extract(model, SENTENCES, tmp_path / "s", cfg)
    assert store.load()["blocks.0.mlp.hook_post"].dtype == torch.float16
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    again = extract(model, SENTENCES, tmp_path / "s", cfg)  # complete: nothing recomputed
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before and again.complete
    with pytest.raises(InputError, match=r"^out_dir: .* is a store of a different extraction \(points is "
                                          r"\['blocks\.0\.mlp\.hook_post'\], this run's is "
                                          r"\['blocks\.1\.mlp\.hook_post'\]\); choose a new directory$"):
        extract(model, SENTENCES, tmp_path / "s", ExtractConfig(("blocks.1.mlp.hook_post",), shard_sentences=2,
                                                                dtype="float16"))
    other = _with_bos(tiny_hooked_with_tokenizer())
    with torch.no_grad():
        other.hf.transformer.wte.weight[0, 0] += 1
    with pytest.raises(InputError, match="weights_sha256"):
        extract(other, SENTENCES, tmp_path / "s", cfg)
    assert store.manifest["model"]["prepend_bos"] is model.prepend_bos is True
    no_bos = HookedModel(model.hf, model.tokenizer, prepend_bos=False)  # same weights, other token stream
    with pytest.raises(InputError, match="prepend_bos"):
        extract(no_bos, SENTENCES, tmp_path / "s", cfg)
    # shards and manifest get a plain file's mode (mkstemp's 0600 would hide them from other users)
    for path in (tmp_path / "s").iterdir():
        assert path.stat().st_mode & 0o777 == default_file_mode()
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an activation store"):
        extract(model, SENTENCES, tmp_path / "user", cfg)
    # a missing shard (as after a crash) is recomputed identically
    shard = tmp_path / "s" / "shard-00001.safetensors"
    shard.unlink()
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({**manifest, "status": "incomplete"}))
    extract(model, SENTENCES, tmp_path / "s", cfg)
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before


@pytest.mark.parametrize(
    ("config", "message"),
    [(ExtractConfig(("blocks.0.attn.hook_pattern",)), "^points: 'blocks.0.attn.hook_pattern' is an attention pattern"),
     (ExtractConfig(("blocks.0.mlp.hook_pots",)), "closest"),
     (ExtractConfig(("blocks.0.mlp.hook_post",), aggregate="max"), "^aggregate: expected one of .*, got 'max'$"),
     (ExtractConfig(("blocks.0.mlp.hook_post",), dtype="int8"), "^dtype: expected one of .*, got 'int8'$"),
     (ExtractConfig(()), "^points: expected at least one hook name$"),
     (ExtractConfig(("blocks.0.mlp.hook_post",), batch_tokens=0), "^batch_tokens: expected a positive integer, got 0$"),
     (ExtractConfig(("blocks.0.mlp.hook_post",), shard_sentences=0),
      "^shard_sentences: expected a positive integer, got 0$")],
)
def test_bad_configs(model, tmp_path: Path, config: ExtractConfig, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=message):
        extract(model, SENTENCES, tmp_path / "s", config)


def test_read_sentences_errors(tmp_path: Path) -> None:
    good = tmp_path / "c.txt"
    good.write_text("a b c\nd e\n")
    assert read_sentences(good) == [["a", "b", "c"], ["d", "e"]]
    bad = tmp_path / "bad.txt"
    bad.write_text("a b\n\nc\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: empty sentence"):
        read_sentences(bad)
    enc = tmp_path / "enc.txt"
    enc.write_bytes(b"ok line\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"enc\.txt:2: not valid UTF-8"):
        read_sentences(enc)
    with pytest.raises(InputError, match="no such file"):
        read_sentences(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="not an activation store"):
        ActivationStore(tmp_path)


def test_weights_hash_is_cached_until_a_weight_changes() -> None:
    from lmscope.activations import weights_sha256

    model = tiny_hooked_with_tokenizer()
    first = weights_sha256(model)
    assert weights_sha256(model) == first
    with torch.no_grad():
        model.hf.transformer.h[0].mlp.c_fc.bias[0] += 1.0
    changed = weights_sha256(model)
    assert changed != first
    with torch.no_grad():
        model.hf.transformer.h[0].mlp.c_fc.bias[0] -= 1.0
    assert weights_sha256(model) == first  # the same bytes give the same fingerprint again


def test_a_store_being_written_is_locked(model, tmp_path: Path,  # type: ignore[no-untyped-def]
                                         caplog: pytest.LogCaptureFixture) -> None:
    """A second writer is refused in one line while the first holds the lock (its temporary shards live); a lock
    left by a process that is gone is taken over; the lock goes when extraction ends."""
    import os
    import socket
    import subprocess
    import sys

    from lmscope.activations.extract import LOCK, store_lock

    out = tmp_path / "store"
    cfg = ExtractConfig(("blocks.0.mlp.hook_post",))
    sentences = [["the", "cat"], ["a", "dog", "ran"]]
    with store_lock(out):
        (out / ".shard-00000.tmp").write_bytes(b"the first writer's live temporary shard")
        with pytest.raises(InputError, match=rf"another lmscope process \({os.getpid()}@.*\) is writing this store"):
            extract(model, sentences, out, cfg)
        assert (out / ".shard-00000.tmp").exists()  # untouched by the refused writer
    assert not (out / LOCK).exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a pid that has exited
    (out / LOCK).write_text(f"{gone}@{socket.gethostname()}")
    with caplog.at_level("WARNING", logger="lmscope.activations.extract"):
        store = extract(model, sentences, out, cfg)
    assert f"taking over the lock of process {gone}" in caplog.text
    assert store.n_rows == 5 and not (out / LOCK).exists() and not (out / ".shard-00000.tmp").exists()
