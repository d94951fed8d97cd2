"""One prompt's forward pass, frozen so that everything upstream of a target is a sum of linear terms.

With each LayerNorm's scale and each attention pattern taken from the forward pass, a target that reads
the residual stream at one position (`u · x[q] + c`) splits exactly into:

- the embedding at q (token + position);
- for each earlier MLP with a transcoder: every active feature `z_f · (W_dec[f] · u)`, the decoder bias,
  the transcoder's error `(mlp_out − transcoder_out) · u` (and its skip term); an MLP without a
  transcoder is one `mlp` leaf;
- for each earlier attention layer: every head and source position `A[h, q, s] · (x_s · u'_s)`, where
  `u'_s` is `W_V[h] W_O[h] u` pulled back through the head's input norm at s (so a path can move to an
  earlier position), plus one `attn_bias` term (value biases, the norm's β, `b_O`);
- the target's own constant (its encoder bias and the norm's β), the `*_bias` node.

A `Probe` is such a target: `u [d_model]` at position `pos`, reading the residual after `n_attn`
attention layers and `n_mlp` MLPs. `children(probe)` lists the terms; `expand(node, probe)` gives the
probe of a feature (its encoder direction, scaled by what it writes into `probe`) or of a head (the
pulled-back vector at the source), so attributions chain into paths. Computed in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmscope.dictionary.modules import Dictionary
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.inputs import Inputs
from lmscope.model.norms import frozen_divisor, norm_parts
from lmscope.model.units import Unit

EXPANDABLE = ("feature", "head")


@dataclass(frozen=True)
class Node:
    """A unit in a circuit: `feature` (layer, index=feature, pos), `head` (layer, index=head, pos=query,
    src=source), or a leaf: `embed`, `error`, `skip`, `mlp`, `dict_bias`, `attn_bias`, `enc_bias`,
    `target_bias`, `rest` (what a pruned graph leaves out below the node `of`), and the `target` itself."""

    kind: str
    layer: int = -1
    index: int = -1
    pos: int = -1
    src: int = -1
    of: str = ""  # rest nodes: the id of the node whose left-out inputs they hold

    @property
    def id(self) -> str:
        k, at = self.kind, f"@{self.pos}"
        if k == "rest":
            return f"rest>{self.of}"
        if k == "feature":
            return f"L{self.layer}.f{self.index}{at}"
        if k == "head":
            return f"H{self.layer}.{self.index}@{self.pos}<-{self.src}"
        if k in ("error", "skip", "mlp", "dict_bias", "attn_bias"):
            return f"{k}:L{self.layer}{at}"
        if k == "enc_bias":
            return f"enc_bias:L{self.layer}.f{self.index}{at}"
        return f"{k}{at}"

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "layer": self.layer, "index": self.index, "pos": self.pos,
                "src": self.src, **({"of": self.of} if self.of else {})}

    def unit(self, dictionary: str | None = None) -> Unit | None:
        """The unit this node is (`lmscope.model.units`), for the interventions and analyses that take units:
        a feature is `dict:<dictionary>:<index>@pos` (None without the name its transcoder is attached under), a
        head `blocks.L.attn:h@pos` (its output at the query position, from every source), an `mlp` leaf
        `blocks.L.hook_mlp_out@pos`, `embed` `blocks.0.hook_resid_pre@pos`; errors, biases, rests and the
        target are no unit (None)."""
        return node_unit(self.kind, self.layer, self.index, self.pos, dictionary)


def node_unit(kind: str, layer: int, index: int, pos: int, dictionary: str | None = None) -> Unit | None:
    """`Node.unit` from a node's fields (as a saved graph holds them)."""
    at = f"@{pos}" if pos >= 0 else ""
    if kind == "feature":
        return Unit.parse(f"dict:{dictionary}:{index}{at}") if dictionary else None
    if kind == "head":
        return Unit.parse(f"blocks.{layer}.attn:{index}{at}")
    if kind == "mlp":
        return Unit.parse(f"blocks.{layer}.hook_mlp_out{at}")
    if kind == "embed":
        return Unit.parse(f"blocks.0.hook_resid_pre{at}")
    return None


@dataclass
class Probe:
    """A linear read-out `u · x[pos] + const` of the residual after `n_attn` attention layers and `n_mlp` MLPs."""

    u: Tensor  # [d_model], float64
    pos: int
    n_attn: int
    n_mlp: int
    const: float = 0.0
    const_node: Node | None = None


class FrozenNorm:
    """A LayerNorm or RMSNorm with its per-token scale frozen from the forward pass: affine in x."""

    def __init__(self, module: nn.Module, x: Tensor) -> None:
        parts = norm_parts(module)
        self.center = parts.centers
        self.gamma = parts.weight.double() if parts.weight is not None else torch.ones(x.shape[-1], dtype=torch.float64)
        self.beta = parts.bias.double() if parts.bias is not None else torch.zeros_like(self.gamma)
        self.sigma = frozen_divisor(module, x.double())  # [pos]

    def pull(self, v: Tensor, pos: int | None = None) -> Tensor:
        """`u` with `v · norm(x)[pos] = u · x[pos] + v · β` (`[..., d]`; every position `[..., pos, d]` if None)."""
        g = self.gamma * v
        if self.center:
            g = g - g.mean(-1, keepdim=True)
        if pos is None:
            return g.unsqueeze(-2) / self.sigma[:, None]
        return g / self.sigma[pos]

    def const(self, v: Tensor) -> float:
        return float(v @ self.beta)

    def apply(self, x: Tensor) -> Tensor:
        """The norm of `x [..., pos, d]` with the frozen scale (float64): affine in x. The scale was taken from an
        input of the same shape (`[pos, d]`, or `[batch, pos, d]` for a batch)."""
        xd = x.double()
        if self.center:
            xd = xd - xd.mean(-1, keepdim=True)
        return self.gamma * xd / self.sigma.unsqueeze(-1) + self.beta


def _check_linear(model: HookedModel) -> None:
    """Refuse families whose frozen forward pass is not the sum the trace decomposes: a norm between the attention
    output and the residual stream (Gemma: `hook_attn_out` is not the sum of its heads), or soft-capped logits."""
    adapter = model.adapter
    if any(adapter.attn_post_norm(layer) is not None for layer in range(model.cfg.n_layers)):
        raise InputError(f"model: {model.cfg.family} puts a norm after each attention output, which circuit traces "
                         "do not linearise yet (heads would not add up to hook_attn_out); use a GPT-2, NeoX or Llama "
                         "layout model")
    if adapter.logit_softcap is not None:
        raise InputError(f"model: {model.cfg.family} soft-caps its logits, so a logit is not a sum of attributions")


class CircuitTrace:
    """The frozen forward pass of one prompt through `model`, with transcoders for some (or all) MLPs.

    `transcoders` maps a layer to a transcoder reading `blocks.L.ln2.hook_normalized` and writing
    `blocks.L.hook_mlp_out`. Attributes (float64, the batch dimension dropped): `tokens [pos]`,
    `logits [pos, d_vocab]`, per layer `z[l] [pos, d_sae]` (feature activations) and `pre[l]`.
    """

    def __init__(self, model: HookedModel, transcoders: Mapping[int, Dictionary], prompt: Inputs) -> None:
        self.model, self.cfg = model, model.cfg
        self.transcoders = dict(transcoders)
        n = self.cfg.n_layers
        _check_linear(model)
        for layer, tc in self.transcoders.items():
            want = (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
            if not 0 <= layer < n or (tc.cfg.hook_name, tc.cfg.hook_name_out) != want:
                raise InputError(f"transcoders: layer {layer} needs a transcoder {want[0]} -> {want[1]}, got "
                                 f"{tc.cfg.hook_name!r} -> {tc.cfg.hook_name_out!r}")
        self.parallel = self.cfg.parallel_attn_mlp
        mid = "hook_resid_pre" if self.parallel else "hook_resid_mid"
        names = ["blocks.0.hook_resid_pre", f"blocks.{n - 1}.hook_resid_post"]
        for layer in range(n):
            p = f"blocks.{layer}."
            names += [p + "hook_resid_pre", p + "attn.hook_pattern", p + "hook_attn_out", p + mid,
                      p + "ln2.hook_normalized", p + "hook_mlp_out"]
        batch = model.to_tokens(prompt)
        if batch.input_ids.shape[0] != 1:
            raise InputError("prompt: a circuit is traced for one prompt at a time")
        with torch.inference_mode():
            logits, cache = model.run_with_cache(batch.input_ids, names=list(dict.fromkeys(names)))
        c = {k: v[0].double() for k, v in cache.items()}
        self.tokens = batch.input_ids[0]
        self.logits = logits[0].double()  # type: ignore[index]
        self.n_pos = int(self.tokens.shape[0])
        self.resid0 = c["blocks.0.hook_resid_pre"]
        self.resid_pre = [c[f"blocks.{layer}.hook_resid_pre"] for layer in range(n)]
        self.pattern = [c[f"blocks.{layer}.attn.hook_pattern"] for layer in range(n)]  # [head, q, k]
        self.attn_out = [c[f"blocks.{layer}.hook_attn_out"] for layer in range(n)]
        self.mlp_out = [c[f"blocks.{layer}.hook_mlp_out"] for layer in range(n)]
        self.x_in = [c[f"blocks.{layer}.ln2.hook_normalized"] for layer in range(n)]
        self.ln2_in = [c[f"blocks.{layer}.{mid}"] for layer in range(n)]
        self.resid_final = c[f"blocks.{n - 1}.hook_resid_post"]
        self.ln1 = [FrozenNorm(model.adapter.ln1(layer), self.resid_pre[layer]) for layer in range(n)]
        self.ln2 = [FrozenNorm(model.adapter.ln2(layer), self.ln2_in[layer]) for layer in range(n)]
        self.ln_f = FrozenNorm(model.adapter.ln_final(), self.resid_final)
        self.W_V, self.W_O = model.W_V.double(), model.W_O.double()  # [layer, head, d, dh], [layer, head, dh, d]
        self.z, self.pre, self.err, self.skip, self.W_enc, self.W_dec, self.b_dec, self.b_enc = ({} for _ in range(8))
        with torch.inference_mode():
            for layer, tc in self.transcoders.items():
                x = self.x_in[layer].to(tc.W_enc.dtype)
                pre = tc.encode_pre(x)
                y_hat, z = tc(x)
                self.pre[layer], self.z[layer] = pre.double(), z.double()
                self.err[layer] = self.mlp_out[layer] - y_hat.double()
                if tc.W_skip is not None:
                    self.skip[layer] = x.double() @ tc.W_skip.double()
                self.W_enc[layer], self.W_dec[layer] = tc.W_enc.double(), tc.W_dec.double()
                self.b_dec[layer] = tc.b_dec.double()
                self.b_enc[layer] = (tc.b_enc - tc.b_dec_in @ tc.W_enc).double()  # input centring folded in

    # --- boundaries -----------------------------------------------------------------------------
    def mlp_input(self, layer: int) -> tuple[int, int]:
        """(n_attn, n_mlp) of what MLP `layer` reads: its own attention too, unless attention runs in parallel."""
        return (layer if self.parallel else layer + 1), layer

    # --- roots ----------------------------------------------------------------------------------
    def logit_probe(self, direction: Tensor, pos: int) -> Probe:
        """The probe of `direction [d_model] · ln_final(x[pos])` (a logit, or a difference of logits)."""
        v = direction.double()
        n = self.cfg.n_layers
        return Probe(self.ln_f.pull(v, pos), pos, n, n, self.ln_f.const(v), Node("target_bias", pos=pos))

    def feature_probe(self, layer: int, feature: int, pos: int, scale: float = 1.0,
                      bias_node: Node | None = None) -> Probe:
        """The probe of `scale ×` the pre-activation of transcoder feature (layer, feature) at `pos`."""
        if layer not in self.transcoders:
            raise InputError(f"feature target: no transcoder for layer {layer}")
        w = self.W_enc[layer][:, feature]
        const = scale * (self.ln2[layer].const(w) + float(self.b_enc[layer][feature]))
        node = bias_node or Node("enc_bias", layer, feature, pos)
        return Probe(scale * self.ln2[layer].pull(w, pos), pos, *self.mlp_input(layer), const, node)

    # --- the decomposition ------------------------------------------------------------------------
    def children(self, probe: Probe) -> list[tuple[Node, float]]:
        """Every term of `probe`'s value (see the module docstring); they sum to it up to rounding."""
        q, u = probe.pos, probe.u
        out: list[tuple[Node, float]] = [(Node("embed", pos=q), float(self.resid0[q] @ u))]
        for layer in range(probe.n_mlp):
            if layer not in self.transcoders:
                out.append((Node("mlp", layer, pos=q), float(self.mlp_out[layer][q] @ u)))
                continue
            z = self.z[layer][q]
            active = (z != 0).nonzero().flatten()
            contrib = z[active] * (self.W_dec[layer][active] @ u)
            out += [(Node("feature", layer, int(f), q), float(v))
                    for f, v in zip(active.tolist(), contrib.tolist(), strict=True)]
            out.append((Node("dict_bias", layer, pos=q), float(self.b_dec[layer] @ u)))
            out.append((Node("error", layer, pos=q), float(self.err[layer][q] @ u)))
            if layer in self.skip:
                out.append((Node("skip", layer, pos=q), float(self.skip[layer][q] @ u)))
        for layer in range(probe.n_attn):
            w = torch.einsum("hdk,hk->hd", self.W_V[layer], self.W_O[layer] @ u)  # W_V W_O u per head
            pulled = self.ln1[layer].pull(w)[:, : q + 1]  # [head, src, d]
            per_src = torch.einsum("hsd,sd->hs", pulled, self.resid_pre[layer][: q + 1])
            contrib = self.pattern[layer][:, q, : q + 1] * per_src  # [head, src]
            for h in range(contrib.shape[0]):
                out += [(Node("head", layer, h, q, s), float(v)) for s, v in enumerate(contrib[h].tolist())]
            out.append((Node("attn_bias", layer, pos=q), float(self.attn_out[layer][q] @ u - contrib.sum())))
        if probe.const_node is not None:
            out.append((probe.const_node, probe.const))
        return out

    def expand(self, node: Node, parent: Probe) -> Probe:
        """The probe whose children explain `node`'s contribution to `parent` (features and heads only)."""
        if node.kind == "feature":
            scale = float(self.W_dec[node.layer][node.index] @ parent.u)
            return self.feature_probe(node.layer, node.index, node.pos, scale)
        if node.kind == "head":
            layer, h = node.layer, node.index
            w = self.W_V[layer][h] @ (self.W_O[layer][h] @ parent.u)
            a = float(self.pattern[layer][h, node.pos, node.src])
            return Probe(a * self.ln1[layer].pull(w, node.src), node.src, layer, layer)
        raise InputError(f"node {node.id}: only features and heads have inputs to trace")

    def value(self, probe: Probe) -> float:
        """`u · x[pos] + const` on the residual stream the model actually computed."""
        n_attn, n_mlp, q = probe.n_attn, probe.n_mlp, probe.pos
        if n_attn == n_mlp:
            x = self.resid_pre[n_attn] if n_attn < self.cfg.n_layers else self.resid_final
        else:  # between attention and MLP of layer n_mlp (sequential blocks)
            x = self.ln2_in[n_mlp]
        return float(x[q] @ probe.u) + probe.const

    def str_tokens(self) -> list[str]:
        tok = self.model.tokenizer
        ids = self.tokens.tolist()
        return [tok.decode([i]) for i in ids] if tok is not None else [str(i) for i in ids]
