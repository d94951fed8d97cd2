"""The sparse dictionary module shared by SAEs and transcoders, and its configuration.

One `Dictionary` covers both kinds: an SAE reconstructs its input (`d_out = d_in`, `hook_name_out =
hook_name`), a transcoder maps the MLP input (`blocks.L.ln2.hook_normalized`) to the MLP output
(`blocks.L.hook_mlp_out`), optionally with a linear skip `x @ W_skip`.

    z = act((x - b_dec_in) @ W_enc + b_enc)        ŷ = z @ W_dec + b_dec (+ x @ W_skip)

Decoder norms. ReLU dictionaries leave decoder rows free and train with the SAELens penalty
`λ · Σ_i z_i · ||W_dec[i]||` (decoder-norm-weighted L1), so shrinking the code while growing the decoder
does not dodge the penalty. TopK SAEs keep decoder rows at unit norm by projection after every optimizer
step; TopK transcoders train from a zero decoder with free row norms (both as sparsify does; see
`lmscope.dictionary.train`). TopK has no L1 term.

`b_dec_in`: for an SAE it is `b_dec` itself (tied, SAELens's `apply_b_dec_to_input=True`). For a
transcoder (or an SAE file with `apply_b_dec_to_input=False`) it is a separate, untrained buffer, zero
unless a loaded file carries one: untied, it is redundant with `b_enc`, and leaving it at zero keeps
lmscope's transcoder files loadable by SAELens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.dictionary.kernels import topk_decode, topk_encode
from lmscope.errors import InputError

KINDS = ("sae", "transcoder")
ACTIVATIONS = ("relu", "topk")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class DictConfig:
    """Architecture of a dictionary plus the hyperparameters it was trained with (saved in cfg.json)."""

    kind: str = "sae"
    d_in: int = 0
    d_sae: int = 0
    d_out: int = 0
    activation: str = "relu"
    k: int | None = None
    l1_coefficient: float = 0.0
    hook_name: str = ""
    hook_name_out: str = ""
    skip: bool = False
    apply_b_dec_to_input: bool = True  # SAEs: b_dec_in is b_dec (False: a separate zero b_dec_in, as in SAELens)
    dtype: str = "float32"
    model_id: str | None = None
    train: dict[str, Any] = field(default_factory=dict)  # training hyperparameters (lr, batch_size, n_steps, ...)
    # the data it was trained on (None / 0 / None when unknown, e.g. trained from tensors or by SAELens):
    prepend_bos: bool | None = None  # whether its token rows started with a BOS (that position left out)
    exclude_first: int = 0  # further leading text tokens left out (see lmscope.dictionary.positions)
    corpus: dict[str, Any] | None = None  # lmscope.dictionary.recipes.corpus_record of the training text

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.kind == "transcoder":
            self.apply_b_dec_to_input = False
        if self.d_out == 0:
            self.d_out = self.d_in
        if not self.hook_name_out:
            self.hook_name_out = self.hook_name
        if self.d_in < 1 or self.d_sae < 1 or self.d_out < 1:
            raise InputError(f"d_in, d_sae, d_out must be positive, got {self.d_in}, {self.d_sae}, {self.d_out}")
        if self.kind == "sae" and (self.d_out != self.d_in or self.skip):
            raise InputError("an SAE reconstructs its input: d_out must equal d_in and skip must be off")
        if isinstance(self.exclude_first, bool) or not isinstance(self.exclude_first, int) or self.exclude_first < 0:
            raise InputError(f"exclude_first: expected a non-negative int, got {self.exclude_first!r}")
        if self.activation == "topk" and (self.k is None or not 1 <= self.k <= self.d_sae):
            raise InputError(f"k: a TopK dictionary needs 1 <= k <= d_sae ({self.d_sae}), got {self.k!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DictConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Dictionary(nn.Module):
    """A sparse dictionary (SAE or transcoder) as a plain PyTorch module; see the module docstring.

    Parameters: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_out]`, `b_dec [d_out]`,
    `W_skip [d_in, d_out]` (skip transcoders only); `b_dec_in [d_in]` (tied to `b_dec` for SAEs).
    """

    b_dec_in: Tensor
    provenance: dict[str, Any]  # set by training: the model record cfg.json keeps (`lmscope.dictionary.io`)

    def __init__(self, cfg: DictConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        dt = cfg.torch_dtype
        W_dec = torch.randn(cfg.d_sae, cfg.d_out, generator=generator, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        if cfg.activation == "relu":
            W_dec *= 0.1  # SAELens's decoder_init_norm: small rows, the L1 weighting keeps them honest
        W_enc = torch.randn(cfg.d_in, cfg.d_sae, generator=generator) / math.sqrt(cfg.d_in)
        if cfg.kind == "sae":
            W_enc = W_dec.T.clone()  # tied initialisation (SAELens, Gao et al.)
        self.W_enc = nn.Parameter(W_enc.to(dt).contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dt))
        self.W_dec = nn.Parameter(W_dec.to(dt).contiguous())
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out, dtype=dt))
        if cfg.kind == "transcoder" or not cfg.apply_b_dec_to_input:
            self.register_buffer("b_dec_in", torch.zeros(cfg.d_in, dtype=dt))
        self.W_skip: nn.Parameter | None = (
            nn.Parameter(torch.zeros(cfg.d_in, cfg.d_out, dtype=dt)) if cfg.skip else None)

    def __getattr__(self, name: str) -> Any:
        cfg = self.__dict__.get("cfg")
        if name == "b_dec_in" and cfg is not None and cfg.kind == "sae" and cfg.apply_b_dec_to_input:
            return super().__getattr__("b_dec")  # an SAE's pre-encoder bias is its decoder bias
        return super().__getattr__(name)

    # --- the maps ------------------------------------------------------------------------------
    def encode_pre(self, x: Tensor) -> Tensor:
        """Pre-activations `Float[Tensor, "... d_sae"]` of `x: Float[Tensor, "... d_in"]`.

        Computed as `x @ W_enc + (b_enc - b_dec_in @ W_enc)` (one `addmm`; no `[B, d_in]` input gradient).
        """
        x2 = x.to(self.W_enc.dtype).reshape(-1, self.cfg.d_in)
        return torch.addmm(self._enc_bias(), x2, self.W_enc).reshape(*x.shape[:-1], self.cfg.d_sae)

    def _enc_bias(self) -> Tensor:
        """`b_enc - b_dec_in @ W_enc`, the encoder bias with the input centring folded in."""
        return self.b_enc - self.b_dec_in @ self.W_enc

    def encode_topk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """TopK only: `(vals, idx)`, both `[B, k]` for `x: [B, d_in]`: the k selected codes of `encode(x)` (fused)."""
        return topk_encode(x.to(self.W_enc.dtype), self.W_enc, self.b_enc, self.b_dec_in, int(self.cfg.k or 1))

    def decode_topk(self, vals: Tensor, idx: Tensor) -> Tensor:
        """`decode` of the codes `scatter(idx, vals)` without forming them: `[B, d_out]`."""
        return topk_decode(vals, idx, self.W_dec, self.b_dec)

    def activate(self, pre: Tensor) -> Tensor:
        """ReLU, or for TopK the `k` largest pre-activations (ReLU'd) with the rest zero."""
        if self.cfg.activation == "relu":
            return torch.relu(pre)
        vals, idx = pre.topk(int(self.cfg.k or 1), dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))

    def encode(self, x: Tensor) -> Tensor:
        """Codes `z: Float[Tensor, "... d_sae"]` of `x: Float[Tensor, "... d_in"]`."""
        return self.activate(self.encode_pre(x))

    def decode(self, z: Tensor) -> Tensor:
        """`z @ W_dec + b_dec`: `Float[Tensor, "... d_out"]` (without the skip term, which needs x)."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`(ŷ, z)`: the reconstruction `Float[Tensor, "... d_out"]` (skip term included) and the codes."""
        z = self.encode(x)
        y_hat = self.decode(z)
        if self.W_skip is not None:
            y_hat = y_hat + x.to(self.W_skip.dtype) @ self.W_skip
        return y_hat, z

    # --- helpers -------------------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale decoder rows to unit norm (TopK SAEs keep them there)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"kind={c.kind}, d_in={c.d_in}, d_sae={c.d_sae}, d_out={c.d_out}, activation={c.activation}"
                + (f", k={c.k}" if c.activation == "topk" else "") + f", hook={c.hook_name!r}"
                + (f" -> {c.hook_name_out!r}" if c.kind == "transcoder" else "") + (", skip" if c.skip else ""))
