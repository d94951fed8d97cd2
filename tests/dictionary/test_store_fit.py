"""A transcoder trains straight from an activation store (input and target points) like from tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from lmscope import HookedModel
from lmscope.activations import ExtractConfig, extract
from lmscope.data.synthetic import generate_corpus
from lmscope.dictionary import Transcoder


def test_transcoder_fits_from_store_same_as_from_tensors(tmp_path: Path) -> None:
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    sentences = [list(s.words) for s in generate_corpus(120, seed=4)]
    points = ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")
    store = extract(model, sentences, tmp_path / "s", ExtractConfig(points, aggregate="first"))
    params = {"d_sae": 64, "batch_size": 256, "n_steps": 20, "l1_coefficient": 0.5, "seed": 3}
    from_store = Transcoder(**params).fit(store, points=list(points))
    X, Y = (store.load()[p] for p in points)
    from_tensors = Transcoder(**params).fit(X, Y)
    assert from_store.dictionary_.cfg.hook_name == points[0] and from_store.dictionary_.cfg.hook_name_out == points[1]
    assert torch.equal(from_store.dictionary_.W_dec, from_tensors.dictionary_.W_dec)
    assert from_store.history_[-1]["loss"] < from_store.history_[0]["loss"]
