"""One adapter per model family: where each hook point lives and how to read the weights per head.

Adapters never change the HF model; they only name its modules. Weight views follow TransformerLens:
`W_Q/W_K/W_V [layer, head, d_model, d_head]`, `W_O [layer, head, d_head, d_model]`,
`W_in [layer, d_model, d_mlp]`, `W_out [layer, d_mlp, d_model]`, `W_E [d_vocab, d_model]`,
`W_U [d_model, d_vocab]`. Grouped-query K/V heads are repeated to one per query head.

Every family question an analysis may ask is a method here, answered per family, so no caller probes
module attributes: the attention input norm (`ln1`), norms between a sub-layer and the residual stream
(`attn_post_norm`, `mlp_post_norm`: Gemma; where present, `hook_attn_out` / `hook_mlp_out` are their
outputs, i.e. what is added to the residual stream), the score scale (`attn_scale`), attention and
final-logit soft-capping (`attn_softcap`, `logit_softcap`), local attention (`sliding_window`), and what
the family's forward gives each block (`block_inputs`, for running blocks one by one: `lmscope.model.window`).
The Gemma family lives in `lmscope.model.gemma`, lmscope's own CRATE in `lmscope.model.crate`; both register
themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, cast

import torch
from torch import Tensor, nn

from lmscope.errors import InputError
from lmscope.model.config import ModelConfig
from lmscope.model.hookpoints import Site, split_heads


def hf_module(module: nn.Module) -> Any:
    """`module` typed as what it is to the checker: an HF module whose submodules and weights are attributes
    known only at run time (`nn.Module.__getattr__` is typed `Tensor | Module`). Returns `module` itself."""
    return module


def _zeros_bias(linear: nn.Module, size: int) -> Tensor:
    bias = getattr(linear, "bias", None)
    return bias.detach() if bias is not None else torch.zeros(size, dtype=cast(Tensor, linear.weight).dtype)


class Adapter(ABC):
    """Maps TransformerLens hook names and weight views onto one HF family's module layout."""

    family: str = ""
    model_types: tuple[str, ...] = ()

    def __init__(self, hf_model: nn.Module) -> None:
        self.hf: Any = hf_model  # an HF causal LM: its submodules are attributes typed only at run time
        self.cfg = self.read_config(hf_model.config)

    # --- layout -------------------------------------------------------------------------------
    @abstractmethod
    def read_config(self, hf_cfg: object) -> ModelConfig: ...

    def embed(self) -> nn.Module:
        return self.hf.get_input_embeddings()

    @abstractmethod
    def blocks(self) -> nn.ModuleList: ...

    @abstractmethod
    def ln_final(self) -> nn.Module: ...

    def unembed(self) -> nn.Linear:
        return self.hf.get_output_embeddings()

    @abstractmethod
    def attn(self, layer: int) -> nn.Module: ...

    @abstractmethod
    def attn_out_proj(self, layer: int) -> nn.Module:
        """The attention output projection: an `nn.Linear`, or GPT-2's `Conv1D` (`[in, out]`)."""

    @abstractmethod
    def ln1(self, layer: int) -> nn.Module:
        """The norm in front of `layer`'s attention: its output is what the attention reads."""

    def attn_post_norm(self, layer: int) -> nn.Module | None:
        """A norm between the attention output projection and the residual stream (Gemma), else None."""
        return None

    @abstractmethod
    def ln2(self, layer: int) -> nn.Module: ...

    def mlp_post_norm(self, layer: int) -> nn.Module | None:
        """A norm between the MLP's down projection and the residual stream (Gemma), else None."""
        return None

    @abstractmethod
    def mlp(self, layer: int) -> nn.Module: ...

    @abstractmethod
    def mlp_act(self, layer: int) -> nn.Module: ...

    @abstractmethod
    def mlp_out_proj(self, layer: int) -> nn.Module: ...

    def has_resid_mid(self) -> bool:
        return not self.cfg.parallel_attn_mlp

    # --- attention and output details (family questions, answered here rather than by hasattr) ------
    def attn_scale(self, layer: int) -> float:
        """The factor on `q . k` before the softmax (TransformerLens's `1 / attn_scale`)."""
        return self.cfg.d_head ** -0.5

    def attn_softcap(self, layer: int) -> float | None:
        """`c` where attention scores are capped as `c * tanh(s / c)` before the mask (Gemma 2), else None."""
        return None

    def sliding_window(self, layer: int) -> int | None:
        """`w` where `layer` attends only to keys with `q - k < w` (local layers), None for global attention."""
        return None

    @property
    def logit_softcap(self) -> float | None:
        """`c` where the model returns `c * tanh(logits / c)` (Gemma 2), else None: the logits are then not
        linear in `ln_final.hook_normalized @ W_U`."""
        return None

    def block_inputs(self, layer: int, args: tuple[Any, ...], kwargs: dict[str, Any],
                     attention_mask: Tensor | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """What the family's forward passes block `layer`, from what it passed block 0 for the same inputs
        (`args`, `kwargs`; see `lmscope.model.window`) and the 2D `attention_mask` the forward was called with.
        Every block gets the same unless the family gives its layers different masks or rotary embeddings."""
        return args, kwargs

    def extra_sites(self) -> dict[str, Site]:
        """Family-specific hook points beyond the common ones (e.g. GPT-2's positional embedding)."""
        return {}

    def sites(self) -> dict[str, Site]:
        """Every hook point of the model, in forward order."""
        sites: dict[str, Site] = {"hook_embed": Site("output", self.embed())}
        sites.update(self.extra_sites())
        head_view, head_unview = split_heads(self.cfg.n_heads)
        for layer, block in enumerate(self.blocks()):
            p = f"blocks.{layer}."
            sites[p + "hook_resid_pre"] = Site("input", block)
            sites[p + "attn.hook_pattern"] = Site("pattern", self.attn(layer))
            sites[p + "attn.hook_z"] = Site("input", self.attn_out_proj(layer), head_view, head_unview)
            attn_post, mlp_post = self.attn_post_norm(layer), self.mlp_post_norm(layer)
            sites[p + "hook_attn_out"] = Site("output", self.attn(layer) if attn_post is None else attn_post)
            if self.has_resid_mid():
                sites[p + "hook_resid_mid"] = Site("input", self.ln2(layer))
            sites[p + "ln2.hook_normalized"] = Site("output", self.ln2(layer))
            sites[p + "mlp.hook_pre"] = Site("input", self.mlp_act(layer))
            sites[p + "mlp.hook_post"] = Site("input", self.mlp_out_proj(layer))
            sites[p + "hook_mlp_out"] = Site("output", self.mlp(layer) if mlp_post is None else mlp_post)
            sites[p + "hook_resid_post"] = Site("output", block)
        sites["ln_final.hook_normalized"] = Site("output", self.ln_final())
        return sites

    # --- weights ------------------------------------------------------------------------------
    @property
    def W_E(self) -> Tensor:
        return hf_module(self.embed()).weight.detach()

    @property
    def W_U(self) -> Tensor:
        return self.unembed().weight.detach().T

    @abstractmethod
    def qkv_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """Q, K, V weights of one layer as `[head, d_model, d_head]` (K/V repeated for grouped heads)."""

    def o_weight(self, layer: int) -> Tensor:
        """`W_O` of one layer as `[head, d_head, d_model]` (from an nn.Linear `[d_model, n_heads*d_head]`)."""
        w = hf_module(self.attn_out_proj(layer)).weight.detach().T
        return w.reshape(self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model)

    def b_O(self, layer: int) -> Tensor:
        return _zeros_bias(self.attn_out_proj(layer), self.cfg.d_model)

    @abstractmethod
    def mlp_in_weight(self, layer: int) -> tuple[Tensor, Tensor]:
        """`W_in [d_model, d_mlp]` and `b_in [d_mlp]` (the up projection for gated MLPs)."""

    def mlp_out_weight(self, layer: int) -> tuple[Tensor, Tensor]:
        """`W_out [d_mlp, d_model]` and `b_out [d_model]`."""
        proj = hf_module(self.mlp_out_proj(layer))
        return proj.weight.detach().T, _zeros_bias(proj, self.cfg.d_model)


def _repeat_heads(w: Tensor, n_heads: int) -> Tensor:
    return w.repeat_interleave(n_heads // w.shape[0], dim=0) if w.shape[0] != n_heads else w


class GPT2Adapter(Adapter):
    """GPT-2 (`GPT2LMHeadModel`): Conv1D weights stored `[in, out]`."""

    family = "gpt2"
    model_types = ("gpt2",)

    def read_config(self, c: object) -> ModelConfig:
        d_model, n_heads = c.n_embd, c.n_head  # type: ignore[attr-defined]
        return ModelConfig(
            family=self.family, model_type=c.model_type, n_layers=c.n_layer,  # type: ignore[attr-defined]
            n_heads=n_heads, n_kv_heads=n_heads, d_model=d_model, d_head=d_model // n_heads,
            d_mlp=c.n_inner or 4 * d_model, d_vocab=c.vocab_size,  # type: ignore[attr-defined]
            n_ctx=c.n_positions, act_fn=c.activation_function, parallel_attn_mlp=False,  # type: ignore[attr-defined]
        )

    def extra_sites(self) -> dict[str, Site]:
        return {"hook_pos_embed": Site("output", self.hf.transformer.wpe)}

    def blocks(self) -> nn.ModuleList:
        return self.hf.transformer.h

    def ln_final(self) -> nn.Module:
        return self.hf.transformer.ln_f

    def attn(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).attn

    def attn_out_proj(self, layer: int) -> nn.Module:
        return hf_module(self.attn(layer)).c_proj

    def ln1(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).ln_1

    def ln2(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).ln_2

    def mlp(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).mlp

    def mlp_act(self, layer: int) -> nn.Module:
        return hf_module(self.mlp(layer)).act

    def mlp_out_proj(self, layer: int) -> nn.Module:
        return hf_module(self.mlp(layer)).c_proj

    def qkv_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        w = hf_module(self.attn(layer)).c_attn.weight.detach()  # [d_model, 3 * d_model]
        c = self.cfg
        return tuple(
            part.reshape(c.d_model, c.n_heads, c.d_head).permute(1, 0, 2) for part in w.split(c.d_model, dim=1)
        )

    def o_weight(self, layer: int) -> Tensor:
        w = hf_module(self.attn_out_proj(layer)).weight.detach()  # Conv1D: [n_heads * d_head, d_model]
        return w.reshape(self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model)

    def mlp_in_weight(self, layer: int) -> tuple[Tensor, Tensor]:
        fc = hf_module(self.mlp(layer)).c_fc
        return fc.weight.detach(), fc.bias.detach()

    def mlp_out_weight(self, layer: int) -> tuple[Tensor, Tensor]:
        proj = hf_module(self.mlp_out_proj(layer))
        return proj.weight.detach(), proj.bias.detach()


class NeoXAdapter(Adapter):
    """GPT-NeoX / Pythia (`GPTNeoXForCausalLM`): fused QKV interleaved per head, parallel residual optional."""

    family = "gpt_neox"
    model_types = ("gpt_neox",)

    def read_config(self, c: object) -> ModelConfig:
        d_model, n_heads = c.hidden_size, c.num_attention_heads  # type: ignore[attr-defined]
        return ModelConfig(
            family=self.family, model_type=c.model_type, n_layers=c.num_hidden_layers,  # type: ignore[attr-defined]
            n_heads=n_heads, n_kv_heads=n_heads, d_model=d_model, d_head=d_model // n_heads,
            d_mlp=c.intermediate_size, d_vocab=c.vocab_size,  # type: ignore[attr-defined]
            n_ctx=c.max_position_embeddings, act_fn=c.hidden_act,  # type: ignore[attr-defined]
            parallel_attn_mlp=bool(c.use_parallel_residual),  # type: ignore[attr-defined]
        )

    def blocks(self) -> nn.ModuleList:
        return self.hf.gpt_neox.layers

    def ln_final(self) -> nn.Module:
        return self.hf.gpt_neox.final_layer_norm

    def attn(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).attention

    def attn_out_proj(self, layer: int) -> nn.Module:
        return hf_module(self.attn(layer)).dense

    def ln1(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).input_layernorm

    def ln2(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).post_attention_layernorm

    def mlp(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).mlp

    def mlp_act(self, layer: int) -> nn.Module:
        return hf_module(self.mlp(layer)).act

    def mlp_out_proj(self, layer: int) -> nn.Module:
        return hf_module(self.mlp(layer)).dense_4h_to_h

    def qkv_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        c = self.cfg
        w = hf_module(self.attn(layer)).query_key_value.weight.detach()  # [n_heads * 3 * d_head, d_model]
        w = w.reshape(c.n_heads, 3, c.d_head, c.d_model).permute(1, 0, 3, 2)  # [3, head, d_model, d_head]
        return w[0], w[1], w[2]

    def mlp_in_weight(self, layer: int) -> tuple[Tensor, Tensor]:
        fc = hf_module(self.mlp(layer)).dense_h_to_4h
        return fc.weight.detach().T, _zeros_bias(fc, self.cfg.d_mlp)


class LlamaAdapter(Adapter):
    """Llama layout (also Mistral, Qwen2): RMSNorm, rotary, gated MLP `down(act(gate(x)) * up(x))`.

    `mlp.hook_pre` is the gate's pre-activation; `mlp.hook_post` is the input of `down_proj`
    (activation times up projection): those are the neurons. `W_in` is the up projection.
    """

    family = "llama"
    model_types = ("llama", "mistral", "qwen2")

    def read_config(self, c: object) -> ModelConfig:
        d_model, n_heads = c.hidden_size, c.num_attention_heads  # type: ignore[attr-defined]
        d_head = getattr(c, "head_dim", None) or d_model // n_heads
        return ModelConfig(
            family=self.family, model_type=c.model_type, n_layers=c.num_hidden_layers,  # type: ignore[attr-defined]
            n_heads=n_heads, n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            d_model=d_model, d_head=d_head, d_mlp=c.intermediate_size,  # type: ignore[attr-defined]
            d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings,  # type: ignore[attr-defined]
            act_fn=c.hidden_act, parallel_attn_mlp=False,  # type: ignore[attr-defined]
        )

    def blocks(self) -> nn.ModuleList:
        return self.hf.model.layers

    def ln_final(self) -> nn.Module:
        return self.hf.model.norm

    def attn(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).self_attn

    def attn_out_proj(self, layer: int) -> nn.Module:
        return hf_module(self.attn(layer)).o_proj

    def ln1(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).input_layernorm

    def ln2(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).post_attention_layernorm

    def mlp(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).mlp

    def mlp_act(self, layer: int) -> nn.Module:
        return hf_module(self.mlp(layer)).act_fn

    def mlp_out_proj(self, layer: int) -> nn.Module:
        return hf_module(self.mlp(layer)).down_proj

    def qkv_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        c, a = self.cfg, hf_module(self.attn(layer))

        def per_head(linear: nn.Linear) -> Tensor:
            w = linear.weight.detach()  # [n * d_head, d_model]
            return _repeat_heads(w.reshape(-1, c.d_head, c.d_model).transpose(1, 2), c.n_heads)

        return per_head(a.q_proj), per_head(a.k_proj), per_head(a.v_proj)

    def sliding_window(self, layer: int) -> int | None:
        """Mistral: the config's window on every layer; Qwen2: on the layers its `layer_types` mark as sliding."""
        c = self.hf.config
        types = getattr(c, "layer_types", None)
        if types is not None:
            return c.sliding_window if types[layer] == "sliding_attention" else None
        return getattr(c, "sliding_window", None) if c.model_type == "mistral" else None

    def block_inputs(self, layer: int, args: tuple[Any, ...], kwargs: dict[str, Any],
                     attention_mask: Tensor | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Qwen2 with sliding and full layers (`layer_types`): each type has its own mask."""
        return typed_block_inputs(self.hf.config.get_text_config(), layer, args, kwargs, attention_mask)

    def mlp_in_weight(self, layer: int) -> tuple[Tensor, Tensor]:
        up = hf_module(self.mlp(layer)).up_proj
        return up.weight.detach().T, _zeros_bias(up, self.cfg.d_mlp)


def typed_block_inputs(config: Any, layer: int, args: tuple[Any, ...], kwargs: dict[str, Any],
                       attention_mask: Tensor | None, rotary: nn.Module | None = None
                       ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Block `layer`'s arguments in a family whose forward picks each block's mask (and, with `rotary`, its rotary
    embedding `rotary(hidden, position_ids, layer_type)`) by `config.layer_types[layer]`, made as that forward makes
    them, from block 0's. A block of block 0's type gets block 0's arguments."""
    types = getattr(config, "layer_types", None)
    if not types or types[layer] == types[0]:
        return args, kwargs
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    make = create_sliding_window_causal_mask if types[layer] == "sliding_attention" else create_causal_mask
    cache = next((v for k, v in kwargs.items() if k in ("cache", "past_key_values")), None)
    position_ids = kwargs.get("position_ids")
    kwargs = {**kwargs, "attention_mask": make(config=config, inputs_embeds=args[0], attention_mask=attention_mask,
                                               cache=cache, position_ids=position_ids)}
    if rotary is not None:
        kwargs["position_embeddings"] = rotary(args[0], position_ids, types[layer])
    return args, kwargs


ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter, NeoXAdapter, LlamaAdapter)


def _register_builtin_families() -> None:
    """Families in modules of their own register themselves on import (they subclass `Adapter`, so they
    cannot be imported at the top of this module)."""
    import lmscope.model.crate
    import lmscope.model.gemma  # noqa: F401


def supported_model_types() -> list[str]:
    _register_builtin_families()
    return [t for a in ADAPTERS for t in a.model_types]


def register_adapter(adapter: type[Adapter]) -> None:
    """Add a family (lmscope's own CRATE model registers itself this way)."""
    global ADAPTERS
    if adapter not in ADAPTERS:
        ADAPTERS = (*ADAPTERS, adapter)


def adapter_for(hf_model: nn.Module) -> Adapter:
    """The adapter for a loaded HF causal LM; refuses families lmscope does not know."""
    _register_builtin_families()
    model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter(hf_model)
    raise InputError(
        f"model type {model_type!r} is not supported; supported model types: {', '.join(supported_model_types())}"
    )
