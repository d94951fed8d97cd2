"""An activation store used with a model: refused when it was extracted from another one (provenance), and a
shard whose tensors or metadata disagree with the manifest is refused in one line."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from lmscope import HookedModel
from lmscope.activations import ActivationStore, ExtractConfig, extract
from lmscope.errors import InputError
from lmscope.model.provenance import provenance_record
from tiny_models import tiny_hooked_with_tokenizer

POINT = "blocks.0.mlp.hook_post"
SENTENCES = [["from", "the", "year", "1732", "."], ["Monday", "Tuesday"], ["the", "cat", "sat", "."]]


@pytest.fixture(scope="module")
def made() -> tuple[Path, HookedModel]:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="prov-store-"))
    m = tiny_hooked_with_tokenizer()
    model = HookedModel(m.hf, m.tokenizer, prepend_bos=True, name="tiny-a")
    extract(model, SENTENCES, root / "store", ExtractConfig((POINT,), shard_sentences=2), model_id="tiny-a")
    yield root / "store", model
    shutil.rmtree(root)


@pytest.fixture
def store(made: tuple[Path, HookedModel], tmp_path: Path) -> Path:
    shutil.copytree(made[0], tmp_path / "store")
    return tmp_path / "store"


def _other(model: HookedModel) -> HookedModel:
    hf = copy.deepcopy(model.hf)
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_proj.weight[1, 2] += 1e-3
    return HookedModel(hf, model.tokenizer, name="tiny-b")


def _edit_manifest(store: Path, change) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((store / "manifest.json").read_text())
    change(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))


def _forge_shard(store: Path, tensors: dict[str, torch.Tensor], meta: object) -> None:
    data = save(tensors, metadata={"lmscope": json.dumps(meta)})
    (store / "shard-00000.safetensors").write_bytes(data)
    _edit_manifest(store, lambda m: m["shards"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest()))


def test_store_of_the_same_model_opens_with_it(made: tuple[Path, HookedModel]) -> None:
    path, model = made
    st = ActivationStore(path, model=model)  # the manifest's full weights_sha256 matches
    assert st.provenance["model_id"] == "tiny-a" and st.manifest["model"]["id"] == "tiny-a"
    twin = HookedModel(copy.deepcopy(model.hf), model.tokenizer, name="twin")
    ActivationStore(path).check_model(twin)  # equal weights under another name: the same model


def test_store_of_another_model_is_refused_naming_both(made: tuple[Path, HookedModel],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path, model = made
    other = _other(model)
    with pytest.raises(InputError, match=rf"^activation store {path} was made with tiny-a \(weights [0-9a-f]{{12}}\), "
                                         r"not with tiny-b \(weights [0-9a-f]{12}\): the weights differ; pass "
                                         r"--allow-model-mismatch"):
        ActivationStore(path, model=other)
    with caplog.at_level(logging.WARNING, logger="lmscope.model.provenance"):
        ActivationStore(path, model=other, allow_mismatch=True)
    assert "used anyway" in caplog.text


def test_a_provenance_record_in_the_manifest_is_used_and_checked(store: Path,
                                                                 made: tuple[Path, HookedModel]) -> None:
    model = made[1]
    _edit_manifest(store, lambda m: m.update(provenance=provenance_record(model)))
    ActivationStore(store, model=model)
    with pytest.raises(InputError, match=r"was made with tiny-a .*not with tiny-b"):
        ActivationStore(store, model=_other(model))
    _edit_manifest(store, lambda m: m["provenance"].update(dims="wide"))
    with pytest.raises(InputError, match=r"manifest\.json: provenance key 'dims' must give a non-negative integer"):
        ActivationStore(store)


def test_store_without_any_model_record_warns(store: Path, made: tuple[Path, HookedModel],
                                              caplog: pytest.LogCaptureFixture) -> None:
    _edit_manifest(store, lambda m: (m.update(model={}), m.pop("provenance", None)))
    with caplog.at_level(logging.WARNING, logger="lmscope.model.provenance"):
        ActivationStore(store, model=made[1])
    assert f"activation store {store} records no model provenance" in caplog.text


@pytest.mark.parametrize(("tensors", "meta", "message"), [
    ({POINT: torch.zeros(2, 3), "sentence_index": torch.zeros(2, dtype=torch.long),
      "word_index": torch.zeros(2, dtype=torch.long)}, {},
     rf"tensor '{POINT}' has shape \(2, 3\), expected \(2, 128\)"),
    ({POINT: torch.zeros(2, 128), "sentence_index": torch.zeros(2, dtype=torch.long),
      "word_index": torch.zeros(3, dtype=torch.long)}, {}, r"sentence_index and word_index must be two \[rows\]"),
    ({POINT: torch.zeros(1, 128), "sentence_index": torch.zeros(1, dtype=torch.long),
      "word_index": torch.zeros(1, dtype=torch.long)}, {"sentences": "abc"},
     r"metadata 'sentences' must be a list of lists of words"),
    ({POINT: torch.zeros(1, 128), "sentence_index": torch.zeros(1, dtype=torch.long),
      "word_index": torch.zeros(1, dtype=torch.long)}, {"first_sentence": [0]},
     r"metadata 'first_sentence' must be a non-negative integer"),
    ({POINT: torch.zeros(1, 128), "sentence_index": torch.zeros(1, dtype=torch.long),
      "word_index": torch.zeros(1, dtype=torch.long)}, [1], r"metadata is not a JSON object"),
])
def test_shard_disagreeing_with_the_manifest(store: Path, tensors: dict, meta: object, message: str) -> None:
    _forge_shard(store, tensors, meta)
    with pytest.raises(InputError, match=rf"shard-00000\.safetensors: {message}"):
        ActivationStore(store).load()
    if "metadata" in message:  # reading only the sentences checks the metadata too
        with pytest.raises(InputError, match=rf"shard-00000\.safetensors: {message}"):
            ActivationStore(store).sentences()


def test_neuron_columns_out_of_range(store: Path) -> None:
    with pytest.raises(InputError, match=rf"neurons: an index is outside 0\.\.127 for point '{POINT}'"):
        ActivationStore(store).load(neurons=[3, 128])
    assert ActivationStore(store).load(neurons=[3, 127])[POINT].shape == (11, 2)


@pytest.mark.parametrize("key", ["n_rows", "n_sentences"])
def test_negative_counts(store: Path, key: str) -> None:
    _edit_manifest(store, lambda m: m.update({key: -1}))
    with pytest.raises(InputError, match=rf"manifest\.json: key '{key}' must be a non-negative integer"):
        ActivationStore(store)
    _edit_manifest(store, lambda m: (m.update({key: 3}), m["shards"][0].update(first_sentence=-4)))
    with pytest.raises(InputError, match=r"key 'shards'\[0\] has a negative index or count"):
        ActivationStore(store)


def test_shapes_are_checked_against_the_model_even_without_provenance(store: Path,
                                                                      made: tuple[Path, HookedModel]) -> None:
    model = made[1]
    _edit_manifest(store, lambda m: (m.update(model={}), m["dims"].update({POINT: 64})))
    with pytest.raises(InputError, match=rf"^activation store {store}: point '{POINT}' has 64 columns, tiny-a gives "
                                         r"128; it was made with another model$"):
        ActivationStore(store, model=model, allow_mismatch=True)
    _edit_manifest(store, lambda m: (m.update(points=["blocks.9.mlp.hook_post"]),
                                     m.update(dims={"blocks.9.mlp.hook_post": 128})))
    with pytest.raises(InputError, match=rf"^activation store {store} was made with another model: .*blocks\.9"):
        ActivationStore(store, model=model)


def test_the_recorded_bos_choice_is_exposed_and_a_different_one_warned(made: tuple[Path, HookedModel],
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    path, model = made
    st = ActivationStore(path)
    assert st.prepend_bos is True  # extracted with prepend_bos=True
    no_bos = HookedModel(model.hf, model.tokenizer, prepend_bos=False, name="tiny-a")
    with caplog.at_level(logging.WARNING, logger="lmscope.activations.store"):
        st.check_model(no_bos)  # the same weights: used, with a warning naming the way to match
    assert "was extracted with a BOS, but tiny-a runs without one; load it with prepend_bos=True" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmscope.activations.store"):
        st.check_model(model)
    assert "BOS" not in caplog.text
