"""A .gguf file as a MODEL: dequantized once through transformers, cached by content hash, hook parity with
transformers' own GGUF load, and one-line errors (missing file, not a GGUF, missing packages, missing tensors)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model import gguf
from lmscope.model.parity import check_parity
from model.tiny_gguf import TEXT, write_tiny_gguf


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def transformers_load(path: Path) -> tuple[torch.nn.Module, object]:
    """The reference: transformers' own GGUF load of the file, as a user of transformers would do it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return hf.eval(), AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.parametrize("add_bos", [False, True])
def test_gguf_hook_parity_with_transformers_load(tmp_path: Path, home: Path, add_bos: bool) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf", add_bos=add_bos)
    m = HookedModel.from_pretrained(str(path))
    ref_hf, ref_tok = transformers_load(path)
    ref = HookedModel(ref_hf, ref_tok)
    assert m.name == str(path) and m.cfg.family == "llama" and m.cfg.n_layers == 2
    assert m.prepend_bos is add_bos and ref.prepend_bos is add_bos
    ids = ref_tok(TEXT)["input_ids"]  # the string path is the tokenizer's own encoding
    assert (ids[0] == 1) is add_bos and m.to_tokens(TEXT).input_ids[0].tolist() == ids
    with torch.no_grad():
        plain = ref_hf(**ref_tok(TEXT, return_tensors="pt")).logits
        logits, cache = m.run_with_cache(TEXT)  # every hook point capturing
        _, ref_cache = ref.run_with_cache(TEXT)
    assert torch.equal(logits, plain) and torch.equal(m(TEXT), plain)
    assert set(cache) == set(ref_cache) == set(m.hook_names)
    for name in m.hook_names:
        assert torch.equal(cache[name], ref_cache[name]), name
    assert check_parity(m, [TEXT, "the hat"]).logits_equal


def test_second_load_reads_the_cache(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    sha = gguf.file_sha256(path)
    first = HookedModel.from_pretrained(str(path))
    target = home / "gguf" / sha
    assert (target / "config.json").exists() and (target / "model.safetensors").exists()
    card = json.loads((target / gguf.CARD).read_text())
    assert card["sha256"] == sha and card["source"] == "tiny.gguf" and card["size"] == path.stat().st_size
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left
    from lmscope.fileio import default_file_mode

    mode = default_file_mode()  # plain modes, not mkdtemp's 0700 / safetensors' 0600: a shared cache stays readable
    assert {p.stat().st_mode & 0o777 for p in [*target.iterdir(), home / "gguf" / "hashes.json"]} == {mode}
    assert target.stat().st_mode & 0o777 == mode | (mode & 0o444) >> 2

    def no_convert(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "convert", no_convert)
    again = HookedModel.from_pretrained(str(path))
    assert torch.equal(again(TEXT), first(TEXT))
    copy = tmp_path / "elsewhere" / "renamed.gguf"  # the key is the content, not the path
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    assert torch.equal(HookedModel.from_pretrained(str(copy)).W_E, first.W_E)
    memo = json.loads((home / "gguf" / "hashes.json").read_text())
    assert {e["sha256"] for e in memo.values()} == {sha} and len(memo) == 2
    # the memo is not trusted over the file: new content at the same path is hashed and converted anew
    monkeypatch.undo()
    monkeypatch.setenv("LMSCOPE_HOME", str(home))
    write_tiny_gguf(path, seed=1)
    other = HookedModel.from_pretrained(str(path))
    assert gguf.file_sha256(path) != sha and not torch.equal(other.W_E, first.W_E)
    assert len([p for p in (home / "gguf").iterdir() if p.is_dir()]) == 2


def test_sha256_memo_is_keyed_by_size_and_mtime(tmp_path: Path, home: Path) -> None:
    import hashlib
    import os

    path = tmp_path / "blob.gguf"
    path.write_bytes(b"GGUF" + b"x" * 100)
    assert gguf.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    st = path.stat()
    memo_path = home / "gguf" / "hashes.json"
    memo = json.loads(memo_path.read_text())
    memo[str(path.resolve())]["sha256"] = "memoised"
    memo_path.write_text(json.dumps(memo))
    assert gguf.file_sha256(path) == "memoised"  # unchanged size and mtime: the file is not read again
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert gguf.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_gguf_errors_are_one_line_input_errors(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(InputError, match=r"nope\.gguf'?: no such file$") as err:
        HookedModel.from_pretrained(str(missing))
    assert "directory" not in str(err.value)
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    with pytest.raises(InputError, match="is a file but not a GGUF checkpoint"):
        HookedModel.from_pretrained(str(text))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(InputError, match="is a file but not a GGUF checkpoint"):
        HookedModel.from_pretrained(str(fake))
    with pytest.raises(InputError, match="no such directory"):
        HookedModel.from_pretrained(str(tmp_path / "no" / "model"))
    holed = write_tiny_gguf(tmp_path / "holed.gguf", skip=("blk.1.ffn_up.weight",))
    with pytest.raises(InputError, match=r"no tensor for 1 parameter.*layers\.1\.mlp\.up_proj"):
        HookedModel.from_pretrained(str(holed))
    assert not (home / "gguf" / gguf.file_sha256(holed)).exists()  # nothing half-converted is cached
    whole = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    stages: list[tuple[int, int]] = []
    for size in (6, 24, 3000, len(whole) // 2):  # cut in the magic's version, the counts, the metadata, the tensors
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(whole[:size])
        with pytest.raises(InputError, match=rf"^model '{re.escape(str(cut))}': not a complete GGUF file "
                                             r"\(truncated or corrupt: [^\n]+\)$"):
            HookedModel.from_pretrained(str(cut), progress=lambda i, n: stages.append((i, n)))
        assert not (home / "gguf" / gguf.file_sha256(cut)).exists()
    assert stages == []  # each refused before the conversion reports a step

    real_find_spec = importlib.util.find_spec

    def without_gguf(name: str, *args: object) -> object:
        return None if name in ("gguf", "accelerate") else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_gguf)
    good = write_tiny_gguf(tmp_path / "good.gguf")
    with pytest.raises(InputError, match=r"needs the gguf and accelerate packages; install with: "
                                         r"pip install 'lmscope\[gguf\]'$") as err:
        HookedModel.from_pretrained(str(good))
    assert len(str(err.value).splitlines()) == 1


def test_tied_gguf_converts(tmp_path: Path, home: Path) -> None:
    """A file with no output.weight is a tied model (as SmolLM2 and Gemma are): not a missing tensor."""
    path = write_tiny_gguf(tmp_path / "tied.gguf", skip=("output.weight",))
    m = HookedModel.from_pretrained(str(path))
    ref_hf, ref_tok = transformers_load(path)
    assert m.hf.config.tie_word_embeddings and torch.equal(m.W_U, m.W_E.T)
    from safetensors import safe_open

    with safe_open(str(home / "gguf" / gguf.file_sha256(path) / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # stored once
    with torch.no_grad():
        assert torch.equal(m(TEXT), ref_hf(**ref_tok(TEXT, return_tensors="pt")).logits)
