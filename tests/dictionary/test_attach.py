"""attach_dictionaries: a unit naming a saved dictionary loads and attaches it; nothing else is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.dictionary import DictConfig, Dictionary, attach_dictionaries, save_dictionary
from lmscope.errors import InputError
from lmscope.model.interventions import ZeroAblation
from tiny_models import tiny_hf_model


@pytest.fixture
def saved(tmp_path: Path) -> tuple[HookedModel, str, Dictionary]:
    model = HookedModel(tiny_hf_model("gpt2"), name="tiny")
    cfg = DictConfig(kind="sae", d_in=model.cfg.d_model, d_sae=10, hook_name="blocks.0.hook_resid_post")
    sae = Dictionary(cfg, generator=torch.Generator().manual_seed(0))
    save_dictionary(sae, tmp_path / "sae", model=model)
    return model, str(tmp_path / "sae"), sae


def test_units_and_hook_names_attach_each_dictionary_once(saved: tuple[HookedModel, str, Dictionary]) -> None:
    model, path, sae = saved
    hook = f"{path}.hook_sae_acts_post"
    assert attach_dictionaries(model, f"dict:{path}:3@-1") == [hook]
    loaded = model.dictionaries[path]
    assert torch.equal(loaded.W_enc, sae.W_enc) and torch.equal(loaded.W_dec, sae.W_dec)
    assert attach_dictionaries(model, [hook, "blocks.0.attn:1", f"{path}.hook_sae_acts_post:9"]) == [hook]
    assert model.dictionaries[path] is loaded  # not read again
    assert attach_dictionaries(model, ["blocks.1.mlp.hook_post:2", "blocks.0.hook_resid_pre"]) == []
    tokens = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens, names=[hook, "blocks.0.hook_resid_post"])
    torch.testing.assert_close(cache[hook], sae.encode(cache["blocks.0.hook_resid_post"]), rtol=0, atol=1e-6)
    _, abl = model.run_with_cache(tokens, names=[hook], hooks=ZeroAblation(f"dict:{path}:3").hooks())
    assert torch.all(abl[hook][..., 3] == 0)


def test_refusals(saved: tuple[HookedModel, str, Dictionary], tmp_path: Path) -> None:
    model, path, _ = saved
    with pytest.raises(InputError, match="model: expected a HookedModel"):
        attach_dictionaries(model.hf, [f"dict:{path}:1"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="units_or_hook_names: expected unit strings"):
        attach_dictionaries(model, [3])  # type: ignore[list-item]
    with pytest.raises(InputError, match=r"cfg\.json: not found"):
        attach_dictionaries(model, [f"dict:{tmp_path / 'nothing'}:1"])
    assert model.dictionaries == {}
