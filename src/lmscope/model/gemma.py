"""The Gemma 2 / Gemma 3 family adapter (`Gemma3ForCausalLM`, `Gemma2ForCausalLM`, and the text part of
`Gemma3ForConditionalGeneration`, which is what `AutoModelForCausalLM` loads for model type `gemma3`).

A Gemma block is

    resid_mid  = resid_pre + post_attention_layernorm(o_proj(attn(input_layernorm(resid_pre))))
    resid_post = resid_mid + post_feedforward_layernorm(down(gelu_tanh(gate(x)) * up(x))),
                 x = pre_feedforward_layernorm(resid_mid)

with RMSNorms that multiply by `1 + weight` (see `lmscope.model.norms`), grouped-query attention whose
queries and keys are RMS-normalised per head (`q_norm`, `k_norm`, Gemma 3 only) before the rotary
embedding, scores scaled by `query_pre_attn_scalar ** -0.5` (not `d_head ** -0.5`), local layers that
see only the last `sliding_window` keys (`q - k < sliding_window`) and global layers that see all, and
tied embeddings.

Hook points, and where their meaning is Gemma's own (all agree with TransformerLens's Gemma models):

- `hook_embed`: the output of the scaled embedding, `weight[t] * sqrt(d_model)` (rounded to the weight
  dtype, as HF does); `W_E` is the same scaled table, so `W_E[t]` is exactly `hook_embed` at token `t`.
  `W_U` is the raw tied weight transposed, so `W_U != W_E.T` by that factor.
- `attn.hook_z` `[batch, pos, head, d_head]`: the input of `o_proj`, so `z @ W_O + b_O` is the attention
  output *before* `post_attention_layernorm`.
- `hook_attn_out`: what is added to the residual stream, i.e. *after* `post_attention_layernorm`; so
  `hook_attn_out = post_attention_layernorm(sum_h z_h @ W_O[h])`, not the plain sum over heads.
- `hook_resid_mid = hook_resid_pre + hook_attn_out`; `ln2.hook_normalized` is the
  `pre_feedforward_layernorm` output (the MLP input); `mlp.hook_pre` the gate's pre-activation;
  `mlp.hook_post` the input of `down_proj` (`gelu_tanh(gate) * up`: the neurons); `hook_mlp_out` the
  MLP's contribution *after* `post_feedforward_layernorm`; `hook_resid_post = hook_resid_mid + hook_mlp_out`.
- `attn.hook_pattern` `[batch, head, q, k]`: softmax of the scaled (and, on Gemma 2, soft-capped) scores
  under each layer's own mask, so rows of local layers are zero outside the window. (A padded query
  that can see no real key, right padding past a window, gets the row the attention implementation
  gives it: zeros under SDPA, uniform under eager; real positions never read it.)
- `ln_final.hook_normalized`: the final norm's output; the logits are `it @ W_U`, soft-capped as
  `c * tanh(logits / c)` where the config has `final_logit_softcapping` (Gemma 2: 30; Gemma 3: none).

`W_Q [layer, head, d_model, d_head]` maps the `input_layernorm` output to the queries *before* `q_norm`
and the rotary embedding (likewise `W_K`); K/V weights of the shared KV heads are repeated per query head.
`W_in` is `up_proj`; `mlp.hook_pre` is read from `gate_proj`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lmscope.model.adapters import LlamaAdapter, hf_module, register_adapter, typed_block_inputs
from lmscope.model.config import ModelConfig


class GemmaAdapter(LlamaAdapter):
    """Gemma 2 and Gemma 3 text models: pre- and post-norms around attention and MLP (see module docstring).

    The attention and MLP modules are named as in Llama (`self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`,
    `mlp.act_fn`), so their weight views and hook sites are Llama's; what differs is below.
    """

    family = "gemma"
    model_types = ("gemma3_text", "gemma3", "gemma2")

    def read_config(self, hf_cfg: object) -> ModelConfig:
        c = hf_cfg.get_text_config()  # type: ignore[attr-defined]  # the text part of a multimodal config
        return ModelConfig(
            family=self.family, model_type=hf_cfg.model_type,  # type: ignore[attr-defined]
            n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
            n_kv_heads=c.num_key_value_heads, d_model=c.hidden_size, d_head=c.head_dim,
            d_mlp=c.intermediate_size, d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings,
            act_fn=c.hidden_activation, parallel_attn_mlp=False,
        )

    def _text_cfg(self) -> Any:
        return self.hf.config.get_text_config()

    def _text_model(self) -> Any:
        """`Gemma3TextModel` / `Gemma2Model`: under `model.language_model` in the multimodal class."""
        return self.hf.model.language_model if self.hf.config.model_type == "gemma3" else self.hf.model

    # --- layout -------------------------------------------------------------------------------
    def embed(self) -> nn.Module:
        return self._text_model().embed_tokens

    def unembed(self) -> nn.Linear:
        return self.hf.lm_head

    def blocks(self) -> nn.ModuleList:
        return self._text_model().layers

    def ln_final(self) -> nn.Module:
        return self._text_model().norm

    def attn_post_norm(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).post_attention_layernorm

    def ln2(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).pre_feedforward_layernorm

    def mlp_post_norm(self, layer: int) -> nn.Module:
        return hf_module(self.blocks()[layer]).post_feedforward_layernorm

    # --- attention and output details ---------------------------------------------------------
    def attn_scale(self, layer: int) -> float:
        return float(hf_module(self.attn(layer)).scaling)  # query_pre_attn_scalar ** -0.5

    def attn_softcap(self, layer: int) -> float | None:
        # Gemma 2 passes it to the attention function; Gemma 3's config may carry the field, but its
        # attention never applies it.
        return self._text_cfg().attn_logit_softcapping if self.hf.config.model_type == "gemma2" else None

    def sliding_window(self, layer: int) -> int | None:
        return hf_module(self.attn(layer)).sliding_window

    def block_inputs(self, layer: int, args: tuple[Any, ...], kwargs: dict[str, Any],
                     attention_mask: Tensor | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Local and global layers have their own masks; Gemma 3's also their own rotary embeddings."""
        rotary = None if self.hf.config.model_type == "gemma2" else self._text_model().rotary_emb
        return typed_block_inputs(self._text_cfg(), layer, args, kwargs, attention_mask, rotary)

    @property
    def logit_softcap(self) -> float | None:
        return self._text_cfg().final_logit_softcapping

    # --- weights ------------------------------------------------------------------------------
    @property
    def W_E(self) -> Tensor:
        """The embedding as the model applies it: `weight * sqrt(d_model)` (TransformerLens's Gemma `W_E`)."""
        emb = hf_module(self.embed())
        return emb.weight.detach() * emb.embed_scale.to(emb.weight.dtype)


register_adapter(GemmaAdapter)
