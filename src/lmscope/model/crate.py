"""The CRATE family (Bai & Ma 2024): lmscope's white-box causal LM as an HF `PreTrainedModel`, and its adapter.

Per block (pre-norm): `x = x + MSSA(LN1(x))`, then `x = ISTA(LN2(x))` (no residual around ISTA, as in the
reference code). MSSA: one bias-free projection `U [d, d]` split into heads; each head is causal softmax
attention with query = key = value = `U_k^T z`; then an output projection. ISTA (overcomplete): dictionary
`D [d, m d]`, `A1 = ReLU(eta D^T x - eta lambda)`, `A2 = ReLU(A1 + eta D^T (x - D A1) - eta lambda)`, output
`D A2`. The module layout gives the spine clean hook sites: `ista.act` (its input is the last step's
pre-activation, `mlp.hook_pre`) and `ista.decode` (its input is the code `A2`, the neurons `mlp.hook_post`).

The family lives in `lmscope.model` like every other: importing this module registers `CrateConfig` /
`CrateForCausalLM` with transformers' Auto classes (a saved CRATE directory, `model_type: "crate"`, loads with
`AutoModelForCausalLM.from_pretrained` and no `trust_remote_code`) and `CrateAdapter` with the spine.

The adapter's hook points:

- `attn.hook_z` is the input of MSSA's output projection (per head, `[batch, pos, head, d_head]`);
  `attn.hook_pattern` is computed by MSSA itself while hooked (q = k = v = `U_k^T z`);
- `mlp.hook_pre` is the last ISTA step's pre-activation, `mlp.hook_post` the sparse code `A2` (the neurons),
  `hook_mlp_out` the ISTA output `D A2`, which is also `hook_resid_post` (no residual around ISTA);
- `W_Q = W_K = W_V` is the shared projection `U` per head; `W_out = D^T`; `W_in = eta D`, `b_in = -eta lambda`
  (the first ISTA step's pre-activation); for the complete variant, whose one step is linear in x,
  `W_in = I + eta (D - D^T D)` (row-vector convention) gives the exact pre-activation.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from lmscope.model.adapters import Adapter, GPT2Adapter, hf_module, register_adapter
from lmscope.model.attention import _HOOK_ATTR, attention_pattern
from lmscope.model.config import ModelConfig
from lmscope.model.crate_config import CrateConfig


class MSSA(nn.Module):
    """Multi-head subspace self-attention: q = k = v = `U_k^T z` per head, causal softmax, output projection."""

    def __init__(self, config: CrateConfig) -> None:
        super().__init__()
        self.n_head, self.d_head = config.n_head, config.n_embd // config.n_head
        self.qkv = nn.Linear(config.n_embd, config.n_embd, bias=False)  # U = [U_1 ... U_K], one shared projection
        self.out_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """`x [batch, pos, d]` -> `[batch, pos, d]`; `mask [batch, 1, q, k]` (True = attend) or None (causal)."""
        b, p, d = x.shape
        w = self.qkv(x).view(b, p, self.n_head, self.d_head).transpose(1, 2)  # [batch, head, pos, d_head]
        scale = self.d_head**-0.5
        hook = getattr(self, _HOOK_ATTR, None)  # set by the spine while `attn.hook_pattern` is hooked
        replaced = hook(attention_pattern(w, w, mask, scale)) if hook is not None else None
        if replaced is None:
            out = F.scaled_dot_product_attention(w, w, w, attn_mask=mask, is_causal=mask is None, scale=scale)
        else:
            out = torch.matmul(replaced.to(w.dtype), w)
        return self.out_proj(out.transpose(1, 2).reshape(b, p, d))


class _Decode(nn.Module):
    """`code @ D^T` (overcomplete) or the code itself (complete); a module so the code can be hooked."""

    def __init__(self, identity: bool) -> None:
        super().__init__()
        self.identity = identity

    def forward(self, code: Tensor, dictionary: Tensor) -> Tensor:
        return code if self.identity else F.linear(code, dictionary)


class ISTA(nn.Module):
    """Sparse coding of `x [.., d]` against the dictionary `D` (see the module docstring for the steps)."""

    def __init__(self, config: CrateConfig) -> None:
        super().__init__()
        self.mode, self.eta, self.lam = config.ista_mode, config.ista_step, config.ista_lambda
        self.D = nn.Parameter(torch.empty(config.n_embd, config.d_code))
        self.act = nn.ReLU()
        self.decode = _Decode(identity=self.mode == "complete")

    def forward(self, x: Tensor) -> Tensor:
        D, eta, shrink = self.D, self.eta, self.eta * self.lam
        if self.mode == "overcomplete":
            a1 = F.relu(eta * (x @ D) - shrink)  # A1 = ReLU(eta D^T x - eta lambda), from A0 = 0
            pre = a1 + eta * ((x - a1 @ D.T) @ D) - shrink
        else:  # complete: one step from A0 = x (the original CRATE block)
            pre = x + eta * ((x - x @ D.T) @ D) - shrink
        return self.decode(self.act(pre), D)


class CrateBlock(nn.Module):
    """`x = x + MSSA(LN1(x))`, then `x = ISTA(LN2(x))`."""

    def __init__(self, config: CrateConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = MSSA(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.ista = ISTA(config)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return self.ista(self.ln_2(x))


class CratePreTrainedModel(PreTrainedModel):
    config_class = CrateConfig
    config: CrateConfig
    base_model_prefix = "transformer"
    # no ClassVar: PreTrainedModel declares it as an instance attribute (its __init__ reassigns it per model)
    _no_split_modules: set[str] | list[str] | None = ["CrateBlock"]  # noqa: RUF012

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, ISTA):
            # a dictionary: columns of unit norm in expectation. GPT's 0.02 would leave the code of a small
            # model (d = 128) at the scale of the next LayerNorm's epsilon, and the model does not train.
            init.normal_(module.D, mean=0.0, std=self.config.n_embd**-0.5)


class CrateModel(CratePreTrainedModel):
    """Embeddings (token + learned position), the CRATE blocks and the final LayerNorm."""

    def __init__(self, config: CrateConfig) -> None:
        super().__init__(config)
        self.wte: nn.Module = nn.Embedding(config.vocab_size, config.n_embd)  # HF may set any module in its place
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList([CrateBlock(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.wte

    def set_input_embeddings(self, new: nn.Module) -> None:
        self.wte = new

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                **kwargs: Any) -> BaseModelOutput:
        """`input_ids [batch, pos]`, `attention_mask [batch, pos]` (1 = token, right padding) -> hidden states."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("CrateModel: pass input_ids or inputs_embeds")
            inputs_embeds = self.wte(input_ids)
        p = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = torch.arange(p, device=inputs_embeds.device).unsqueeze(0)
        x = inputs_embeds + self.wpe(position_ids)
        mask = _mask(attention_mask, p)
        for block in self.h:
            x = block(x, mask)
        return BaseModelOutput(last_hidden_state=self.ln_f(x))


def _mask(attention_mask: Tensor | None, p: int) -> Tensor | None:
    """Causal mask `[batch, 1, q, k]` without padded keys (None when nothing is padded: the fast causal path)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keys = attention_mask.bool()[:, None, None, :]
    causal = torch.ones(p, p, dtype=torch.bool, device=keys.device).tril()
    return (causal & keys) | torch.eye(p, dtype=torch.bool, device=keys.device)  # a padded row sees itself


class CrateForCausalLM(CratePreTrainedModel):
    """CRATE with a language-modelling head tied to the token embedding."""

    # no ClassVar: PreTrainedModel declares it as an instance attribute, which a ClassVar may not override
    _tied_weights_keys: dict[str, str] = {"lm_head.weight": "transformer.wte.weight"}  # noqa: RUF012

    def __init__(self, config: CrateConfig) -> None:
        super().__init__(config)
        self.transformer = CrateModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new: nn.Linear) -> None:
        self.lm_head = new

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                labels: Tensor | None = None, **kwargs: Any) -> CausalLMOutput:
        """Logits `[batch, pos, vocab]`; with `labels` also the mean next-token loss (labels shifted here)."""
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  inputs_embeds=inputs_embeds).last_hidden_state
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)


class CrateAdapter(GPT2Adapter):
    """CRATE (`CrateForCausalLM`, model type "crate"): GPT-2's module names for blocks, norms and embeddings."""

    family = "crate"
    model_types = ("crate",)
    o_weight = Adapter.o_weight  # MSSA's output projection is an nn.Linear, not GPT-2's Conv1D

    def read_config(self, c: object) -> ModelConfig:
        return ModelConfig(
            family=self.family, model_type=c.model_type, n_layers=c.n_layer,  # type: ignore[attr-defined]
            n_heads=c.n_head, n_kv_heads=c.n_head, d_model=c.n_embd,  # type: ignore[attr-defined]
            d_head=c.n_embd // c.n_head, d_mlp=c.d_code, d_vocab=c.vocab_size,  # type: ignore[attr-defined]
            n_ctx=c.n_positions, act_fn=f"ista-{c.ista_mode}", parallel_attn_mlp=False,  # type: ignore[attr-defined]
        )

    def attn_out_proj(self, layer: int) -> nn.Module:
        return hf_module(self.attn(layer)).out_proj

    def mlp(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).ista

    def mlp_act(self, layer: int) -> nn.Module:
        return hf_module(self.mlp(layer)).act

    def mlp_out_proj(self, layer: int) -> nn.Module:
        return hf_module(self.mlp(layer)).decode

    def qkv_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        c = self.cfg
        u = hf_module(self.attn(layer)).qkv.weight.detach()  # [n_heads * d_head, d_model]
        per_head = u.reshape(c.n_heads, c.d_head, c.d_model).transpose(1, 2)
        return per_head, per_head, per_head

    def mlp_in_weight(self, layer: int) -> tuple[Tensor, Tensor]:
        ista = cast(ISTA, self.mlp(layer))  # a CRATE block's MLP is lmscope's ISTA
        D = ista.D.detach()
        bias = torch.full((D.shape[1],), -ista.eta * ista.lam, dtype=D.dtype)
        if ista.mode == "complete":  # pre = x (I + eta (D - D^T D)) - eta lambda, exactly
            return torch.eye(D.shape[0], dtype=D.dtype) + ista.eta * (D - D.T @ D), bias
        return ista.eta * D, bias

    def mlp_out_weight(self, layer: int) -> tuple[Tensor, Tensor]:
        ista = cast(ISTA, self.mlp(layer))  # a CRATE block's MLP is lmscope's ISTA
        D = ista.D.detach()
        zeros = torch.zeros(D.shape[0], dtype=D.dtype)
        return (torch.eye(D.shape[0], dtype=D.dtype) if ista.mode == "complete" else D.T), zeros


def build_crate(arch: dict[str, Any], vocab_size: int, bos_id: int) -> CrateForCausalLM:
    """A freshly initialised CRATE model of the given sizes (seed torch before calling for reproducibility)."""
    cfg = CrateConfig(**arch, vocab_size=vocab_size, bos_token_id=bos_id, eos_token_id=bos_id, pad_token_id=bos_id)
    return CrateForCausalLM(cfg)


AutoConfig.register("crate", CrateConfig, exist_ok=True)
AutoModelForCausalLM.register(CrateConfig, CrateForCausalLM, exist_ok=True)
register_adapter(CrateAdapter)
