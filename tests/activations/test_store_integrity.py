"""An activation store is untrusted input: a tampered manifest or shard is refused in one line naming the file."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cli_runner import run
from lmscope import HookedModel
from lmscope.activations import ActivationStore, ExtractConfig, extract
from lmscope.errors import InputError
from tiny_models import tiny_hooked_with_tokenizer

POINT = "blocks.0.mlp.hook_post"
SENTENCES = [["from", "the", "year", "1732", "."], ["Monday", "Tuesday"], ["the", "cat", "sat", "."], ["5", "6"]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "store"
    m = tiny_hooked_with_tokenizer()
    model = HookedModel(m.hf, m.tokenizer, prepend_bos=True)
    extract(model, SENTENCES, out, ExtractConfig((POINT,), shard_sentences=3))
    return out


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(pristine, copy)
    return copy


def _edit_manifest(store: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((store / "manifest.json").read_text())
    change(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))


def _read_all(store: Path) -> None:
    ActivationStore(store).load()


def test_manifest_records_size_and_sha256_of_each_shard(pristine: Path) -> None:
    for entry in json.loads((pristine / "manifest.json").read_text())["shards"]:
        data = (pristine / entry["file"]).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert ActivationStore(pristine).load()[POINT].shape[0] == sum(map(len, SENTENCES))


def test_flipped_byte_in_a_shard(store: Path) -> None:
    shard = store / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01  # inside the tensor data: safetensors alone would read it as a different activation
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"shard-00001\.safetensors: sha256 does not match manifest\.json"):
        _read_all(store)


def test_truncated_and_missing_shard(store: Path) -> None:
    shard = store / "shard-00000.safetensors"
    full = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(InputError, match=rf"shard-00000\.safetensors: 100 bytes, manifest\.json says {full} "
                                         r"\(truncated or replaced\)"):
        _read_all(store)
    shard.unlink()
    with pytest.raises(InputError, match=r"shard-00000\.safetensors: shard listed in manifest\.json is missing"):
        _read_all(store)


@pytest.mark.parametrize("name", ["../shard-00000.safetensors", "/etc/passwd", "sub/shard-00000.safetensors",
                                  "..", "", "sub\\x.safetensors"])
def test_shard_names_confined_to_the_store(store: Path, name: str) -> None:
    (store.parent / "shard-00000.safetensors").write_bytes((store / "shard-00000.safetensors").read_bytes())
    _edit_manifest(store, lambda m: m["shards"][0].update(file=name))
    with pytest.raises(InputError, match=r"manifest\.json: key 'shards'\[0\]\.'file' .* is not a file name "
                                         r"inside the store"):
        ActivationStore(store)  # refused on opening, before anything is read


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.pop("dims"), r"key 'dims' is missing"),
    (lambda m: m.update(n_rows="31"), r"key 'n_rows' must be an integer, not str"),
    (lambda m: m.update(points=[1]), r"key 'points' must be a list of strings"),
    (lambda m: m["dims"].pop(POINT), rf"key 'dims' must give a non-negative integer for point '{POINT}'"),
    (lambda m: m.pop("shards"), r"key 'shards' is missing or not a list"),
    (lambda m: m["shards"][1].pop("sha256"), r"key 'shards'\[1\]\.'sha256' is missing"),
    (lambda m: m["shards"][0].update(size=True), r"key 'shards'\[0\]\.'size' must be an integer"),
    (lambda m: m["shards"].__setitem__(0, "shard-00000.safetensors"), r"key 'shards'\[0\] must be an object"),
])
def test_manifest_schema(store: Path, change: Callable[[dict], None], message: str) -> None:
    _edit_manifest(store, change)
    with pytest.raises(InputError, match=rf"manifest\.json: {message}"):
        ActivationStore(store)


def test_bad_json_and_not_an_object(store: Path) -> None:
    (store / "manifest.json").write_text('{"format": ')
    with pytest.raises(InputError, match=r"manifest\.json: not valid JSON \(Expecting value, line 1\)"):
        ActivationStore(store)
    (store / "manifest.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"manifest\.json: must be a JSON object, not list"):
        ActivationStore(store)


def test_bad_safetensors_with_a_matching_hash(store: Path) -> None:
    """A shard that is not safetensors (its hash forged into the manifest too) is named, not a traceback."""
    bad = b"\xff" * 64
    (store / "shard-00000.safetensors").write_bytes(bad)
    _edit_manifest(store, lambda m: m["shards"][0].update(size=64, sha256=hashlib.sha256(bad).hexdigest()))
    with pytest.raises(InputError, match=r"shard-00000\.safetensors: not a valid safetensors shard"):
        _read_all(store)


def test_shard_without_the_point(store: Path) -> None:
    from safetensors.torch import save

    data = save({"sentence_index": torch.zeros(1, dtype=torch.long), "word_index": torch.zeros(1, dtype=torch.long)})
    (store / "shard-00000.safetensors").write_bytes(data)
    _edit_manifest(store, lambda m: m["shards"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(InputError, match=rf"shard-00000\.safetensors: no tensor '{POINT}'"):
        _read_all(store)


def test_neurons_rank_on_a_tampered_store_exits_2_with_one_line(store: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"tokens": s, "labels": ["A" if i % 2 else "B" for i in range(len(s))]})
                              + "\n" for s in SENTENCES))
    shard = store / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x10
    shard.write_bytes(bytes(data))
    code, _, err = run(capsys, "neurons", "rank", str(store), "--labels", str(labels), "--method", "probeless",
                         "--out", str(tmp_path / "rank"))
    assert code == 2 and not (tmp_path / "rank").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "shard-00000.safetensors: sha256 does not match manifest.json" in lines[0]
    assert "Traceback" not in err


def test_a_shard_changed_between_two_reads_of_one_store_is_caught(store: Path) -> None:
    """Hashes are remembered per reader for unchanged files only: a rewrite after the first read is refused."""
    st = ActivationStore(store)
    first = st.load()[POINT]
    torch.testing.assert_close(st.load()[POINT], first)  # second read of unchanged shards: same rows
    shard = store / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.unlink()
    shard.write_bytes(bytes(data))  # a new file: new inode and mtime
    with pytest.raises(InputError, match=r"shard-00001\.safetensors: sha256 does not match manifest\.json"):
        st.load()
