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
