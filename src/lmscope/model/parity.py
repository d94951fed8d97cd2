"""Hook parity: the checks that prove the hooks read the model faithfully (used by tests and the demo)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from lmscope.model.hooked import HookedModel
from lmscope.model.inputs import Inputs


@dataclass(frozen=True)
class ParityReport:
    """Worst-case errors of each identity over all layers (0.0 means exact).

    Reconstruction errors (`z_to_attn_out`, `post_to_mlp_out`) are relative to the largest activation they
    reconstruct (when above 1), since real models' residual streams reach 1e3 and float32 reorders sums.
    """

    logits_equal: bool
    z_to_attn_out: float
    post_to_mlp_out: float
    resid_chain: float
    pattern_row_sum: float
    pattern_above_diagonal: float
    n_hook_points: int

    def ok(self, tol: float = 1e-4) -> bool:
        errors = (self.z_to_attn_out, self.post_to_mlp_out, self.resid_chain, self.pattern_row_sum,
                  self.pattern_above_diagonal)
        return self.logits_equal and all(e <= tol for e in errors)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok()}


def check_parity(model: HookedModel, inputs: Inputs) -> ParityReport:
    """Run bare and with every hook point capturing, and measure each identity the hooks must satisfy.

    - logits with all hooks capturing are `torch.equal` to the bare HF logits;
    - `attn.hook_z @ W_O + b_O == hook_attn_out`, `mlp.hook_post @ W_out + b_out == hook_mlp_out` (through the
      family's post-norm where it has one, e.g. Gemma's post-attention and post-feedforward norms);
    - `hook_resid_post` of layer l is `hook_resid_pre` of layer l + 1;
    - attention patterns sum to 1 over keys and are zero above the diagonal (causal).
    """
    batch = model.to_tokens(inputs)
    with torch.inference_mode():
        bare = model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logits, cache = model.run_with_cache(batch.input_ids if batch.attention_mask.all() else inputs)
    W_O, b_O, W_out, b_out = model.W_O, model.b_O, model.W_out, model.b_out
    z_err = post_err = chain_err = row_err = upper = 0.0
    adapter = model.adapter
    for layer in range(model.cfg.n_layers):
        p = f"blocks.{layer}."
        with torch.inference_mode():
            rec = _post(adapter.attn_post_norm(layer),
                        torch.einsum("bphd,hdm->bpm", cache[p + "attn.hook_z"], W_O[layer]) + b_O[layer])
            z_err = max(z_err, _relative_error(rec, cache[p + "hook_attn_out"]))
            rec = _post(adapter.mlp_post_norm(layer), cache[p + "mlp.hook_post"] @ W_out[layer] + b_out[layer])
            post_err = max(post_err, _relative_error(rec, cache[p + "hook_mlp_out"]))
        if layer + 1 < model.cfg.n_layers:
            nxt = cache[f"blocks.{layer + 1}.hook_resid_pre"]
            chain_err = max(chain_err, (cache[p + "hook_resid_post"] - nxt).abs().max().item())
        pattern = cache[p + "attn.hook_pattern"]
        row_err = max(row_err, (pattern.sum(-1) - 1).abs().max().item())
        upper = max(upper, pattern.triu(1).abs().max().item())
    return ParityReport(bool(logits is not None and torch.equal(bare, logits)), z_err, post_err, chain_err,
                        row_err, upper, len(cache))


def _post(norm: torch.nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)


def _relative_error(rec: torch.Tensor, target: torch.Tensor) -> float:
    """Largest absolute error, divided by the target's largest magnitude when that exceeds 1."""
    return (rec - target).abs().max().item() / max(1.0, target.abs().max().item())
