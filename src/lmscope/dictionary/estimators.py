"""`SAE` and `Transcoder`: scikit-learn-style estimators (`lmscope.estimator`) that train a `Dictionary`.

Hyperparameters are `__init__` keywords that are only stored (dataclass fields, each declared once; the
training ones are `TrainConfig`'s); `fit` checks them, returns self and sets the learned attributes
`dictionary_` (the `Dictionary` module; its weights also read as `W_enc_`, `b_enc_`, `W_dec_`, `b_dec_`),
`history_` (one dict per step: loss, mse, l1 or aux, l0, lr, n_dead), `n_steps_`, `dead_mask_` (bool
`[d_sae]`, not fired in the last `dead_after` rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor

from lmscope.activations.store import ActivationStore
from lmscope.dictionary.buffer import ActivationBuffer
from lmscope.dictionary.io import save_dictionary
from lmscope.dictionary.metrics import evaluate
from lmscope.dictionary.modules import DictConfig, Dictionary
from lmscope.dictionary.train import (
    IteratorSource,
    Progress,
    RunConfig,
    TensorSource,
    TrainConfig,
    Trainer,
    TrainResult,
)
from lmscope.distributed import dist_info
from lmscope.errors import InputError
from lmscope.estimator import Estimator

ArrayLike = Tensor | np.ndarray


def _as_tensor(a: Any, name: str) -> Tensor:
    t = torch.as_tensor(a) if isinstance(a, np.ndarray | Tensor) else None
    if t is None or t.ndim != 2:
        raise InputError(f"{name}: expected a [n, d] tensor or array, got "
                         f"{getattr(a, 'shape', type(a).__name__)}")
    return t if t.is_floating_point() else t.float()


@dataclass(kw_only=True, eq=False, repr=False)
class _DictionaryEstimator(Estimator, TrainConfig):
    """Shared by `SAE` and `Transcoder`. Hyperparameters, each declared once as a field: the architecture
    below (`d_sae`, `activation`, `l1_coefficient`, `k`, `dtype`), every field of `TrainConfig` (lr,
    batch_size, n_steps, schedules, dead-latent handling, seed; inherited), and where the rows come from
    (`hook_name`, `model_id`: recorded in cfg.json and the default store points). `__init__` only stores
    them; `fit` checks them. Run settings (checkpoints, resume) are `fit(..., run=RunConfig(...))`."""

    _kind: ClassVar[str] = "sae"

    d_sae: int = field(default=1024, kw_only=False)
    activation: str = "relu"
    l1_coefficient: float = 1e-3
    k: int | None = None
    dtype: str = "float32"
    hook_name: str = ""
    model_id: str | None = None

    @property
    def _hooks(self) -> list[str]:
        """The hook point(s) named at construction: input, and target for a transcoder."""
        return [self.hook_name]

    def _points(self, points: Sequence[str] | None) -> list[str]:
        pts = list(points) if points is not None else self._hooks
        need = 2 if self._kind == "transcoder" else 1
        if len(pts) != need or not all(pts):
            raise InputError(f"points: a {self._kind} reads {need} hook point(s) from the store "
                             f"(input{', target' if need == 2 else ''}), got {pts!r}")
        return pts

    def _data(self, X: Any, Y: Any, points: Sequence[str] | None, rank: int,
              world: int) -> tuple[TensorSource | IteratorSource, int, int, list[str]]:
        """The data source, d_in, d_out, and the hook names it came from (if known)."""
        if isinstance(X, ActivationBuffer):
            names = list(X.hook_names)
            if len(names) != (2 if self._kind == "transcoder" else 1):
                raise InputError(f"ActivationBuffer: a {self._kind} needs "
                                 f"{'2 hook names (input, target)' if self._kind == 'transcoder' else '1 hook name'}")
            X.configure(batch_size=self.batch_size // world, rank=rank, world=world)
            d_in, d_out = X.dims[0], X.dims[-1]
            return IteratorSource(X.pairs()), d_in, d_out, names
        names = []
        if isinstance(X, ActivationStore):
            names = self._points(points)
            loaded = X.load(names)
            X, Y = loaded[names[0]], loaded[names[-1]]
        Xt = _as_tensor(X, "X")
        if self._kind == "sae":
            if Y is not None:
                raise InputError("Y: an SAE reconstructs X; pass Y only to a Transcoder")
            Yt = Xt
        else:
            if Y is None:
                raise InputError("Y: a Transcoder needs targets Y [n, d_out] (the MLP output)")
            Yt = _as_tensor(Y, "Y")
            if Yt.shape[0] != Xt.shape[0]:
                raise InputError(f"Y: {Yt.shape[0]} rows, X has {Xt.shape[0]}")
        return TensorSource(Xt, Yt, self.batch_size, self.seed, rank, world), Xt.shape[1], Yt.shape[1], names

    def fit(self, X: ArrayLike | ActivationStore | ActivationBuffer, Y: ArrayLike | None = None, *,
            points: Sequence[str] | None = None, run: RunConfig | None = None,
            progress: Progress | None = None) -> Self:
        """Train on rows `X [n, d_in]` (targets `Y [n, d_out]` for a transcoder), on an ActivationStore's
        `points` (input, and target for a transcoder; default: hook_name, hook_name_out), or on an
        ActivationBuffer streaming from a model. `run`: checkpoints and resume (`RunConfig`; default none);
        `progress(step, n_steps, record)` after every step. Returns self."""
        rank, world = dist_info()
        source, d_in, d_out, names = self._data(X, Y, points, rank, world)
        hooks = self._hooks
        hook = hooks[0] or (names[0] if names else "")
        hook_out = hooks[-1] or (names[-1] if names else "")
        data: dict[str, Any] = {}
        if isinstance(X, ActivationBuffer):  # the rows' provenance goes into cfg.json
            data = {"prepend_bos": X.positions.prepend_bos, "exclude_first": X.positions.exclude_first,
                    "corpus": X.corpus}
        module, tc = self.build(d_in, d_out, hook, hook_out, **data)
        result = Trainer(module, tc, run=run, progress=progress).run(source)
        return self.fitted(module, result)

    def build(self, d_in: int, d_out: int, hook: str, hook_out: str,
              **provenance: Any) -> tuple[Dictionary, TrainConfig]:
        """The untrained `Dictionary` (initial weights from `seed`) and the `TrainConfig` that `fit` uses;
        `provenance` (prepend_bos, exclude_first, corpus) goes into its cfg. Shared with stack training
        (`lmscope.dictionary.multi`), so one layer trained alone and inside a stack start identically."""
        tc = TrainConfig.of(self)
        cfg = DictConfig(kind=self._kind, d_in=d_in, d_sae=self.d_sae, d_out=d_out, activation=self.activation,
                         k=self.k, l1_coefficient=self.l1_coefficient if self.activation == "relu" else 0.0,
                         hook_name=hook, hook_name_out=hook_out if self._kind == "transcoder" else hook,
                         skip=self._skip, dtype=self.dtype, model_id=self.model_id, train=tc.to_dict(), **provenance)
        if tc.batch_size < 1 or tc.n_steps < 0:
            raise InputError("batch_size must be positive and n_steps non-negative")
        if not (isinstance(self.l1_coefficient, int | float) and math.isfinite(self.l1_coefficient)
                and self.l1_coefficient >= 0):
            raise InputError(f"l1_coefficient: expected a finite number >= 0, got {self.l1_coefficient!r}")
        if not (isinstance(tc.lr, int | float) and math.isfinite(tc.lr) and tc.lr > 0):
            raise InputError(f"lr: expected a finite number > 0, got {tc.lr!r}")
        if self.dtype == "float16":  # Adam's second moment and eps underflow in float16: NaN weights in one step
            raise InputError("dtype: float16 cannot train a dictionary (Adam underflows); use float32 or bfloat16, "
                             "and cast the trained dictionary if you need float16")
        return Dictionary(cfg, generator=torch.Generator().manual_seed(self.seed)), tc

    @property
    def _skip(self) -> bool:
        return False

    def fitted(self, module: Dictionary, result: TrainResult) -> Self:
        """Set the learned attributes from a trained module and its `TrainResult`; returns self."""
        self.dictionary_ = module
        self.history_ = result.history
        self.n_steps_ = result.n_steps
        self.dead_mask_ = result.dead_mask
        return self

    # --- using the fitted dictionary ---
    def _fitted(self) -> Dictionary:
        self._check_is_fitted("dictionary_")
        return self.dictionary_

    @property
    def W_enc_(self) -> Tensor:
        """The fitted encoder `[d_in, d_sae]` (detached: the `dictionary_` module holds the parameters)."""
        return self._fitted().W_enc.detach()

    @property
    def b_enc_(self) -> Tensor:
        """The fitted encoder bias `[d_sae]`."""
        return self._fitted().b_enc.detach()

    @property
    def W_dec_(self) -> Tensor:
        """The fitted decoder `[d_sae, d_out]`: row i is feature i's direction in the target space."""
        return self._fitted().W_dec.detach()

    @property
    def b_dec_(self) -> Tensor:
        """The fitted decoder bias `[d_out]`."""
        return self._fitted().b_dec.detach()

    @torch.no_grad()
    def transform(self, X: ArrayLike) -> Tensor:
        """Codes `z [n, d_sae]` of rows `X [n, d_in]`."""
        return self._fitted().encode(_as_tensor(X, "X"))

    @torch.no_grad()
    def reconstruct(self, X: ArrayLike) -> Tensor:
        """`ŷ [n, d_out]`: the reconstruction (SAE) or predicted MLP output (transcoder) of `X [n, d_in]`."""
        return self._fitted()(_as_tensor(X, "X"))[0]

    def score(self, X: ArrayLike, Y: ArrayLike | None = None, *, dense_threshold: float = 0.1) -> dict[str, Any]:
        """Metrics on held-out rows (L0, FVU against the target's mean, dead/dense fractions, density
        histogram) as a JSON-safe dict; see `lmscope.dictionary.metrics`."""
        Xt = _as_tensor(X, "X")
        Yt = None if Y is None else _as_tensor(Y, "Y")
        if self._kind == "transcoder" and Yt is None:
            raise InputError("Y: a Transcoder is scored against targets Y [n, d_out]")
        return evaluate(self._fitted(), Xt, Yt, dense_threshold=dense_threshold).to_dict()

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the fitted dictionary in SAELens's layout (see `lmscope.dictionary.io`)."""
        return save_dictionary(self._fitted(), directory, overwrite=overwrite)


class SAE(_DictionaryEstimator):
    """A sparse autoencoder: reconstructs activations of one hook point through `d_sae` sparse latents."""

    _kind: ClassVar[str] = "sae"


@dataclass(kw_only=True, eq=False, repr=False)
class Transcoder(_DictionaryEstimator):
    """A transcoder: imitates an MLP (input hook -> output hook) through `d_sae` sparse latents;
    `skip=True` adds a linear skip `x @ W_skip`; `hook_name_out` names the target hook (the MLP output)."""

    _kind: ClassVar[str] = "transcoder"

    skip: bool = False
    hook_name_out: str = ""

    @property
    def _hooks(self) -> list[str]:
        return [self.hook_name, self.hook_name_out]

    @property
    def _skip(self) -> bool:
        return self.skip
