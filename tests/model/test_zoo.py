"""The model zoo: shipped models load offline, pass parity, and have learned the corpus; training is seeded."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model import zoo
from lmscope.model.parity import check_parity

TEXTS = ["the day after Monday is Tuesday .", "from the year 1732 to the year 1789 .", "A B C D E F"]


PACKAGED_MODELS = ("gpt2-tiny", "neox-tiny", "llama-tiny", "crate-tiny", "gpt2-tiny-relu")
"""Every zoo model ships inside the package (the demo and the suite run with no training)."""


def test_every_zoo_model_is_packaged() -> None:
    """The parity test below runs over PACKAGED_MODELS; a spec added without its shipped weights fails here."""
    assert tuple(zoo.SPECS) == PACKAGED_MODELS


@pytest.mark.parametrize("name", PACKAGED_MODELS)
def test_zoo_model_loads_and_passes_parity(name: str) -> None:
    """A packaged model that is missing fails (it is not dropped from the list, nor trained in its place)."""
    shipped = zoo.PACKAGED / name
    assert (shipped / "config.json").is_file() and (shipped / "model.safetensors").is_file(), f"{shipped}: missing"
    assert zoo.locate(name) == shipped  # the shipped weights are what loads, not a training run
    model = HookedModel.from_pretrained(f"zoo:{name}")
    assert model.cfg.family == zoo.SPECS[name].family
    report = check_parity(model, TEXTS)
    assert report.logits_equal and report.ok(tol=1e-4), report


def test_gpt2_tiny_learned_the_corpus() -> None:
    card = zoo.card("gpt2-tiny")
    assert card is not None
    assert card["heldout_loss"] < 0.6 * card["unigram_loss"]
    assert card["ordinal"]["in_distribution"]["accuracy"] >= 0.9
    assert card["ordinal"]["sequence"]["accuracy"] >= 0.9


def test_gpt2_tiny_continues_sequences_now() -> None:
    """Recompute (not read from the card): the shipped weights continue runs and complete templates."""
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    prompts = {"Monday Tuesday Wednesday": " Thursday", "5 6 7 8": " 9", "the letter after C is": " D"}
    logits = model(list(prompts))
    last = model.to_tokens(list(prompts)).last_positions()
    predicted = [model.tokenizer.decode([int(logits[i, p].argmax())]) for i, p in enumerate(last)]
    assert predicted == list(prompts.values())


def test_zoo_lookup_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="unknown; the zoo has gpt2-tiny"):
        zoo.spec("gpt5-huge")
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path))
    assert zoo.home() == tmp_path
    assert zoo.locate("gpt2-tiny") == zoo.PACKAGED / "gpt2-tiny"
    monkeypatch.setenv("LMSCOPE_ZOO_PACKAGED", "0")  # a cold start: nothing on disk, it must be trained
    assert zoo.locate("gpt2-tiny") is None
    assert zoo.listing()[0]["location"] == "not trained"


def test_training_is_reproducible_from_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path / "home"))
    a = zoo.train("llama-tiny", out_dir=tmp_path / "a", steps=3, n_samples=600)
    b = zoo.train("llama-tiny", out_dir=tmp_path / "b", steps=3, n_samples=600)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    card = json.loads((a / "zoo_card.json").read_text())
    assert HookedModel.from_pretrained(str(a)).prepend_bos  # the trained tokenizer adds its BOS itself
    assert card["train"]["steps"] == 3 and len(card["curve"]["losses"]) == 1
    with pytest.raises(InputError, match="already exists"):
        zoo.train("llama-tiny", out_dir=a, steps=1, n_samples=600)
    # a model trained into the cache is found there first, before the packaged one
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path))
    (tmp_path / "zoo").mkdir()
    a.rename(tmp_path / "zoo" / "llama-tiny")
    with caplog.at_level(logging.WARNING, logger="lmscope.model.zoo"):
        assert zoo.locate("llama-tiny") == tmp_path / "zoo" / "llama-tiny"
        assert zoo.locate("llama-tiny") == tmp_path / "zoo" / "llama-tiny"
    # a 3-step model hides the shipped one: said once, naming the directory to delete
    assert [r.getMessage() for r in caplog.records] == [
        f"zoo:llama-tiny: using the cached copy in {tmp_path / 'zoo' / 'llama-tiny'}, which differs from the "
        "weights shipped with this lmscope; delete that directory to use the shipped ones"]
    loaded = HookedModel.from_pretrained("zoo:llama-tiny")
    assert torch.equal(loaded.W_E, HookedModel.from_pretrained(str(tmp_path / "zoo" / "llama-tiny")).W_E)
    # a cached copy equal to the shipped weights (a faithful retrain) is not worth a warning
    caplog.clear()
    shutil.copytree(zoo.PACKAGED / "llama-tiny", tmp_path / "same" / "zoo" / "llama-tiny")
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path / "same"))
    with caplog.at_level(logging.WARNING, logger="lmscope.model.zoo"):
        assert zoo.locate("llama-tiny") == tmp_path / "same" / "zoo" / "llama-tiny"
    assert not caplog.records


def test_zoo_tokenizer_adds_the_bos_the_models_were_trained_with(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`tokenizer(text)` is what a zoo model sees: BOS (`<|endoftext|>`, id 0) first, added by the tokenizer."""
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    text = "the day after Monday is Tuesday ."
    ids = model.tokenizer(text)["input_ids"]
    assert ids[0] == 0 and ids[1:] == model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert model.prepend_bos and model.to_tokens(text).input_ids[0].tolist() == ids
    assert model.to_str_tokens("Monday")[0] == "<|endoftext|>"
    # a cache written by an older lmscope (tokenizer adding nothing) is upgraded on load, not silently changed
    old = tmp_path / "zoo" / "llama-tiny"
    shutil.copytree(zoo.PACKAGED / "llama-tiny", old)
    spec = json.loads((old / "tokenizer.json").read_text())
    spec["post_processor"] = None
    (old / "tokenizer.json").write_text(json.dumps(spec))
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path))
    upgraded = HookedModel.from_pretrained("zoo:llama-tiny")
    assert upgraded.prepend_bos and upgraded.tokenizer(text)["input_ids"] == ids


def test_shipped_tokenizer_is_what_training_writes(tmp_path: Path) -> None:
    """`lmscope zoo train` reproduces the shipped tokenizer.json byte for byte, BOS template included."""
    from lmscope.data.tokenizer import save_tokenizer

    save_tokenizer(zoo.zoo_tokenizer(), tmp_path)
    for name in zoo.SPECS:
        assert (tmp_path / "tokenizer.json").read_bytes() == (zoo.PACKAGED / name / "tokenizer.json").read_bytes()
