"""HookedModule on a hand-built two-step network: its named submodules are hook points with the HookedModel contract
(cache, replace, hooks removed also on error, unknown names refused), and both wrappers satisfy `Runnable`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmscope.errors import InputError
from lmscope.model.toy import HookedModule, Runnable
from tiny_models import tiny_hf_model


class TwoStep(nn.Module):
    """`h = 3 x` (hook point `h`), output `2 h + 1`."""

    def __init__(self) -> None:
        super().__init__()
        self.h = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.h.weight.fill_(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.h(x) + 1


def test_cache_and_replace_follow_the_closed_form() -> None:
    module = TwoStep()
    model = HookedModule(module, {"h": module.h})
    x = torch.tensor([[1.0], [2.0]])
    out, cache = model.run_with_cache(x)
    assert torch.equal(out, torch.tensor([[7.0], [13.0]])) and torch.equal(cache["h"], torch.tensor([[3.0], [6.0]]))
    patched = model.run_with_hooks(x, [("h", lambda t, *, hook: torch.full_like(t, 10.0))])
    assert torch.equal(patched, torch.tensor([[21.0], [21.0]]))
    seen: list[str] = []
    model.run_with_hooks(x, [("h", lambda t, *, hook: seen.append(hook.name))])
    assert seen == ["h"] and model.hook_names == ["h"]
    assert model.run_with_cache(x, return_logits=False)[0] is None


def test_hooks_are_removed_after_an_error_and_unknown_names_are_refused() -> None:
    module = TwoStep()
    model = HookedModule(module, {"h": module.h})

    def boom(t: torch.Tensor, *, hook: object) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(torch.ones(1, 1), [("h", boom)])
    assert not module.h._forward_hooks
    with pytest.raises(InputError, match=r"hook name 'hh': not a hook point of this model; closest: h"):
        model.run_with_hooks(torch.ones(1, 1), [("hh", boom)])


def test_both_wrappers_are_runnable() -> None:
    from lmscope import HookedModel

    module = TwoStep()
    assert isinstance(HookedModule(module, {"h": module.h}), Runnable)
    assert isinstance(HookedModel(tiny_hf_model("gpt2")), Runnable)
    assert not isinstance(module, Runnable)
