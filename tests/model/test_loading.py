"""Loading and test isolation: the suite runs against its own LMSCOPE_HOME, and the packaged zoo is still found."""

from __future__ import annotations

import os
from pathlib import Path

from lmscope.model import zoo


def test_suite_home_is_isolated_and_packaged_zoo_is_found(isolated_lmscope_home: str) -> None:
    assert os.environ["LMSCOPE_HOME"] == isolated_lmscope_home
    assert zoo.home() == Path(isolated_lmscope_home)
    assert zoo.home() != Path("~/.cache/lmscope").expanduser()
    assert not (zoo.home() / "zoo" / "gpt2-tiny").exists()  # nothing cached in the test home
    assert zoo.locate("gpt2-tiny") == zoo.PACKAGED / "gpt2-tiny"  # the shipped weights, not a training run


def test_pickle_weights_refused_unless_allowed(tmp_path: Path) -> None:
    import pytest
    import torch

    from lmscope import HookedModel
    from lmscope.errors import InputError
    from tiny_models import tiny_hooked_with_tokenizer

    tiny = tiny_hooked_with_tokenizer()
    safe, pickled = tmp_path / "safe", tmp_path / "pickled"
    for d in (safe, pickled):
        tiny.hf.save_pretrained(d)
        tiny.tokenizer.save_pretrained(d)
    for f in pickled.glob("*.safetensors"):  # the same weights as a pickle checkpoint, the old HF format
        f.unlink()
    torch.save(tiny.hf.state_dict(), pickled / "pytorch_model.bin")
    assert (pickled / "pytorch_model.bin").exists() and not list(pickled.glob("*.safetensors"))
    ids = torch.tensor([[1, 2, 3]])
    expected = tiny.forward(ids)
    torch.testing.assert_close(HookedModel.from_pretrained(str(safe)).forward(ids), expected)
    with pytest.raises(InputError, match=r"weights only in pickle format \(pytorch_model\.bin\), which can run "
                                         r"arbitrary code when loaded; .* pass allow_pickle=True"):
        HookedModel.from_pretrained(str(pickled))
    torch.testing.assert_close(HookedModel.from_pretrained(str(pickled), allow_pickle=True).forward(ids), expected)


def test_classifier_scorer_refuses_pickle_weights(tmp_path: Path) -> None:
    import pytest
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from lmscope.causal.scorers import HFClassifierScorer
    from lmscope.errors import InputError
    from tiny_models import tiny_hooked_with_tokenizer

    tok = tiny_hooked_with_tokenizer().tokenizer
    clf = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tok), num_labels=2,
                                                   pad_token_id=0))
    for d in (tmp_path / "safe", tmp_path / "pickled"):
        clf.save_pretrained(d)
        tok.save_pretrained(d)
    for f in (tmp_path / "pickled").glob("*.safetensors"):
        f.unlink()
    torch.save(clf.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    probs = HFClassifierScorer(str(tmp_path / "safe"))(["the senator voted"])
    with torch.no_grad():  # by hand: P(label 1) of the classifier on the tokenized text
        expected = clf.eval()(**tok(["the senator voted"], return_tensors="pt")).logits.softmax(-1)[:, 1]
    assert probs.shape == (1,)
    torch.testing.assert_close(probs.float(), expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(InputError, match=r"pickled: classifier weights only in pickle format, which can run "
                                         r"arbitrary code when loaded"):
        HFClassifierScorer(str(tmp_path / "pickled"))(["the senator voted"])
