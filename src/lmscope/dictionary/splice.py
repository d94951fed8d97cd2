"""Splicing a dictionary into the model: run the LM with an SAE or transcoder in place of what it imitates.

    logits = model.run_with_hooks(texts, hooks=Splice(transcoder).hooks())
    logits = model.run_with_hooks(texts, hooks=Splice(transcoder, ablate=[12], error_term=True).hooks())
    metrics = spliced_metrics(model, transcoder, texts)  # clean / spliced / mean-ablated loss, recovered, KL

An SAE replaces the activation at its hook point with its reconstruction. A transcoder reads its input
hook (`blocks.L.ln2.hook_normalized`) and replaces its output hook (`blocks.L.hook_mlp_out`) with its
prediction, so the MLP's computation runs through the dictionary's features. With `error_term=True` the
dictionary's error (true − reconstruction) is added back: the output is then exact, and only the features
that were edited change it (the "error node" of feature-circuit work).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from lmscope.dictionary.positions import PositionRule
from lmscope.dictionary.positions import scored_positions as scored_positions  # re-exported (its old home)
from lmscope.errors import InputError
from lmscope.model.dictionaries import edit_delta
from lmscope.model.hooked import HookedModel
from lmscope.model.hookpoints import HookPoint
from lmscope.model.inputs import Inputs, TokenBatch
from lmscope.model.interventions import HookPair, Intervention, MeanAblation
from lmscope.results import ResultMixin


class DictionaryConfigLike(Protocol):
    """What splicing reads from a dictionary's config."""

    @property
    def hook_name(self) -> str:
        """The input hook point."""

    @property
    def hook_name_out(self) -> str:
        """The hook point it reconstructs (equal to hook_name for an SAE)."""

    @property
    def kind(self) -> str:
        """`"sae"` or `"transcoder"`."""


@runtime_checkable
class DictionaryLike(Protocol):
    """Any SAE or transcoder: `lmscope.dictionary.Dictionary`, or a stand-in with the same duck type.

    `forward(x)` returns `(reconstruction, z)`; it may include terms that `decode` leaves out (a transcoder's
    linear skip), so splicing takes the reconstruction from `forward` and uses `decode` only for edits.
    """

    @property
    def cfg(self) -> DictionaryConfigLike: ...

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


class Splice(Intervention):
    """Replace a dictionary's target hook with the dictionary's output, optionally editing its features.

    `features`: keep only these latents (the rest are zeroed). `ablate`: zero these latents. Both may be
    given (keep `features`, then zero `ablate`). `error_term=True`: add back `true − reconstruction`, so
    the unedited splice is the identity and an edit changes the output by exactly `decode(z') − decode(z)`.
    Edits are applied as `reconstruction + decode(z') − decode(z)`, so terms outside the latents (a skip
    connection) are kept. Activations are cast to the dictionary's dtype and device, and the result back.
    `keep_first`: the first `keep_first` positions of every row keep their true activation (the attention
    sinks a dictionary was not trained on: `PositionRule.n_leading`, as `spliced_metrics` uses it).
    """

    def __init__(self, dictionary: DictionaryLike, *, features: Iterable[int] | None = None,
                 ablate: Iterable[int] | None = None, error_term: bool = False, keep_first: int = 0) -> None:
        cfg = getattr(dictionary, "cfg", None)
        if cfg is None or not getattr(cfg, "hook_name", None):
            raise InputError("dictionary: expected an SAE or transcoder whose cfg names its hook_name")
        self.dictionary = dictionary
        self.hook_name: str = cfg.hook_name
        self.hook_name_out: str = getattr(cfg, "hook_name_out", "") or cfg.hook_name
        self.features = None if features is None else _indices(features, "features")
        self.ablate = () if ablate is None else _indices(ablate, "ablate")
        self.error_term = bool(error_term)
        if isinstance(keep_first, bool) or not isinstance(keep_first, int) or keep_first < 0:
            raise InputError(f"keep_first: expected a non-negative number of positions, got {keep_first!r}")
        self.keep_first = keep_first

    @property
    def edits(self) -> bool:
        """Whether any latent is changed (otherwise the splice is the plain reconstruction)."""
        return self.features is not None or bool(self.ablate)

    def edit(self, z: Tensor) -> Tensor:
        """The latents `z [..., d_sae]` with `features` kept and `ablate` zeroed (a new tensor)."""
        d_sae = z.shape[-1]
        wanted = [*(self.features or ()), *self.ablate]
        if wanted and max(wanted) >= d_sae:
            raise InputError(f"features/ablate: latent {max(wanted)} out of range for a dictionary with "
                             f"d_sae={d_sae}")
        keep = torch.ones(d_sae, dtype=torch.bool, device=z.device)
        if self.features is not None:
            keep[:] = False
            keep[list(self.features)] = True
        if self.ablate:
            keep[list(self.ablate)] = False
        return z.masked_fill(~keep, 0)

    def output(self, x: Tensor, target: Tensor) -> Tensor:
        """What replaces `target` (the true activation at hook_name_out, `[batch, pos, ...]`) given the input
        `x` at hook_name; the first `keep_first` positions are `target`'s."""
        out = self._output(x, target)
        if self.keep_first and out is not target:
            out = out.clone()
            out[:, : self.keep_first] = target[:, : self.keep_first]
        return out

    def _output(self, x: Tensor, target: Tensor) -> Tensor:
        if self.error_term and not self.edits:
            return target  # reconstruction + (true − reconstruction): nothing to compute
        d = self.dictionary
        y_hat, z = d.forward(_to_dictionary(d, x))
        if self.edits:
            delta = edit_delta(d, self.edit(z), z)  # (z' - z) @ W_dec: exactly 0 where no latent changed
            if self.error_term:
                return target + delta.to(device=target.device, dtype=target.dtype)
            y_hat = y_hat + delta
        return y_hat.to(device=target.device, dtype=target.dtype)

    def hooks(self) -> list[HookPair]:
        """One hook for an SAE; for a transcoder, a capture on the input hook and a replacement on the output."""
        if self.hook_name == self.hook_name_out:
            def replace_same(t: Tensor, *, hook: HookPoint) -> Tensor:
                return self.output(t, t)

            return [(self.hook_name, replace_same)]

        captured: dict[str, Tensor] = {}  # the input of the current forward pass, consumed by the output hook

        def capture(t: Tensor, *, hook: HookPoint) -> None:
            captured["x"] = t

        def replace(t: Tensor, *, hook: HookPoint) -> Tensor:
            x = captured.pop("x", None)
            if x is None:
                raise InputError(f"splice: {self.hook_name_out!r} fired before the dictionary's input "
                                 f"{self.hook_name!r}; the input hook must come earlier in the forward pass")
            if x.shape[:-1] != t.shape[:-1]:
                raise InputError(f"splice: input {self.hook_name!r} has shape {tuple(x.shape)} but output "
                                 f"{self.hook_name_out!r} has {tuple(t.shape)}; expected the same batch and positions")
            return self.output(x, t)

        return [(self.hook_name, capture), (self.hook_name_out, replace)]

    def __repr__(self) -> str:
        parts = [f"{self.hook_name!r}" + (f" -> {self.hook_name_out!r}" if self.hook_name_out != self.hook_name
                                           else "")]
        if self.features is not None:
            parts.append(f"features={list(self.features)}")
        if self.ablate:
            parts.append(f"ablate={list(self.ablate)}")
        if self.error_term:
            parts.append("error_term=True")
        if self.keep_first:
            parts.append(f"keep_first={self.keep_first}")
        return f"Splice({', '.join(parts)})"


def _indices(values: Iterable[int], arg: str) -> tuple[int, ...]:
    """Validated, de-duplicated latent indices (order kept); numpy and 0-d tensor ints are accepted."""
    if isinstance(values, int | str):
        values = [values]  # type: ignore[list-item]
    out: dict[int, None] = {}
    for v in values:
        try:
            i = operator.index(v)
        except TypeError:
            i = -1
        if isinstance(v, bool) or i < 0:
            raise InputError(f"{arg}: expected non-negative integer latent indices, got {v!r}")
        out[i] = None
    return tuple(out)


def _to_dictionary(d: object, x: Tensor) -> Tensor:
    """`x` on the dictionary's device and in its dtype (a dictionary without parameters takes it as is)."""
    params = getattr(d, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return x if first is None else x.to(device=first.device, dtype=first.dtype)


def feature_activations(model: HookedModel, dictionary: DictionaryLike, inputs: Inputs, *,
                        positions: PositionRule | None = None) -> Tensor:
    """The dictionary's latents `[batch, pos, d_sae]` on `inputs`, zero at padding positions.

    `positions`: also zero the positions this rule leaves out (the attention sinks; pass
    `PositionRule.for_dictionary(model, dictionary)` for the rule the dictionary was trained with).
    One forward pass that stops at the input hook point; no gradients.
    """
    hook = dictionary.cfg.hook_name
    batch = model.to_tokens(inputs)
    _, cache = model.run_with_cache(batch, names=[hook], return_logits=False)
    with torch.no_grad():
        z = dictionary.encode(_to_dictionary(dictionary, cache[hook]))
    mask = batch.attention_mask.bool() if positions is None else positions.kept(batch)
    return z.masked_fill(~mask.to(device=z.device)[..., None], 0)


@dataclass
class SplicedMetrics(ResultMixin):
    """The LM with the dictionary spliced in, against the clean LM and against mean ablation of the target.

    Losses are mean next-token cross-entropy in nats. `loss_recovered = (ablated − spliced) / (ablated −
    clean)`: 1.0 for a perfect dictionary, 0.0 for one no better than the target's mean, negative for one
    worse than that; NaN (undefined, `loss_recovered_note` says why) when mean ablation does not raise the
    loss. `kl_div`: mean KL(clean ‖ spliced) of the next-token distributions at the same positions as the
    losses.
    """

    hook_name: str
    hook_name_out: str
    clean_loss: float
    spliced_loss: float
    ablated_loss: float
    loss_recovered: float
    kl_div: float
    n_tokens: int
    loss_recovered_note: str | None = None
    kind: ClassVar[str] = "spliced_metrics"

    def to_dict(self) -> dict[str, Any]:
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        return {"kind": self.kind, **out}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplicedMetrics:
        """The metrics back from their result.json (a NaN was written as null)."""
        return cls(**{f.name: math.nan if d[f.name] is None and f.name != "loss_recovered_note" else d[f.name]
                      for f in fields(cls) if f.name in d})


def spliced_metrics(model: HookedModel, dictionary: DictionaryLike, texts: Sequence[str], *,
                    batch_size: int = 16, exclude_first: int | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> SplicedMetrics:
    """Clean, spliced and mean-ablated LM loss, fraction of loss recovered and KL(clean ‖ spliced) on `texts`.

    Positions follow the dictionary's `PositionRule` (`lmscope.dictionary.positions`: the BOS position when
    the model prepends one, and the first `exclude_first` text tokens, default the dictionary's recorded
    `cfg.exclude_first`, are left out). At those leading positions neither the dictionary nor the ablation
    is applied (they keep their true activation), and predictions made there are not scored; elsewhere the
    splice and the ablation replace the whole target hook (`hook_name_out`), the ablation by its mean over
    the kept positions of the same texts (`site_mean`), gathered during the clean passes. Losses and KL
    count `scored_positions` and are computed in float64. Forward passes: one clean, one spliced and one
    ablated per batch. `progress(stage, i, n)` is called per batch.

    `loss_recovered` is undefined (NaN, null in JSON, with `loss_recovered_note` saying why) when the
    ablation does not raise the loss: the ratio then has no meaning, whatever its value.
    """
    batches = _token_batches(model, texts, batch_size)
    rule = PositionRule.for_dictionary(model, dictionary, exclude_first)
    splice = Splice(dictionary, keep_first=rule.n_leading)
    hook_out = splice.hook_name_out
    model.check_names([splice.hook_name, hook_out])
    report = progress or (lambda stage, i, n: None)

    clean_sum = spliced_sum = kl_sum = 0.0
    n_tokens = 0
    mean = _MeanAccumulator()
    for i, batch in enumerate(batches):
        report("clean and spliced loss", i, len(batches))
        with torch.no_grad():
            clean, cache = model.run_with_cache(batch, names=[hook_out])
            spliced = model.run_with_hooks(batch, hooks=splice.hooks())
        assert clean is not None and spliced is not None
        mean.add(cache[hook_out], rule.kept(batch))
        mask = rule.scored(batch)
        c, s, kl = _losses(clean, spliced, batch.input_ids, mask)
        clean_sum, spliced_sum, kl_sum = clean_sum + c, spliced_sum + s, kl_sum + kl
        n_tokens += int(mask.sum())
    report("clean and spliced loss", len(batches), len(batches))
    if n_tokens == 0:
        raise InputError(f"texts: no token to score (each text needs at least two tokens after the "
                         f"{rule.n_leading} leading position(s) left out; {rule.describe()})")

    ablation = _mean_ablation(hook_out, mean.mean(), rule.n_leading)
    ablated_sum = 0.0
    for i, batch in enumerate(batches):
        report("mean-ablated loss", i, len(batches))
        with torch.no_grad():
            ablated = model.run_with_hooks(batch, hooks=ablation)
        assert ablated is not None
        ablated_sum += _losses(ablated, None, batch.input_ids, rule.scored(batch))[0]
    report("mean-ablated loss", len(batches), len(batches))

    clean_loss, spliced_loss, ablated_loss = clean_sum / n_tokens, spliced_sum / n_tokens, ablated_sum / n_tokens
    recovered, note = recovered_fraction(clean_loss, spliced_loss, ablated_loss, hook_out)
    return SplicedMetrics(splice.hook_name, hook_out, clean_loss, spliced_loss, ablated_loss, recovered,
                          kl_sum / n_tokens, n_tokens, note)


def recovered_fraction(clean: float, spliced: float, ablated: float,
                       hook: str = "the target") -> tuple[float, str | None]:
    """`((ablated − spliced) / (ablated − clean), None)`, or `(nan, reason)` when ablating `hook` does not raise
    the loss (`ablated <= clean`): then there is no loss for a dictionary to recover, and the ratio's sign
    and size say nothing about it."""
    if ablated > clean:
        return (ablated - spliced) / (ablated - clean), None
    return math.nan, (f"undefined: mean-ablating {hook} does not raise the loss (ablated {ablated:.4f} <= clean "
                      f"{clean:.4f} nats), so there is no loss for the dictionary to recover")


def _mean_ablation(hook: str, mean: Tensor, keep_first: int) -> list[HookPair]:
    """`hook` set to `mean` at every position from `keep_first` on (the leading ones keep their true value)."""
    if keep_first == 0:
        return MeanAblation([hook], {hook: mean}).hooks()

    def ablate(t: Tensor, *, hook: HookPoint) -> Tensor:
        out = t.clone()
        out[:, keep_first:] = mean.to(t.dtype)
        return out

    return [(hook, ablate)]


def site_mean(model: HookedModel, hook_name: str, texts: Sequence[str], *, batch_size: int = 16,
              exclude_first: int = 0) -> Tensor:
    """Mean of `hook_name` over the kept positions of `texts` (`[d]`), exactly as `spliced_metrics` ablates with.

    Kept: `kept_positions` with the model's BOS and `exclude_first` (every real token when the model adds no
    BOS and `exclude_first` is 0, as `compute_means` takes them). Batched and summed in float64 in
    `spliced_metrics`'s batch order, so a dictionary that outputs this tensor scores exactly 0.
    """
    model.check_names([hook_name])
    rule = PositionRule.for_model(model, exclude_first)
    mean = _MeanAccumulator()
    for batch in _token_batches(model, texts, batch_size):
        _, cache = model.run_with_cache(batch, names=[hook_name], return_logits=False)
        mean.add(cache[hook_name], rule.kept(batch))
    return mean.mean()


class _MeanAccumulator:
    """Running float64 sum and count of an activation `[batch, pos, ...]` over the positions of a mask."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0
        self.dtype = torch.float32

    def add(self, act: Tensor, mask: Tensor) -> None:
        real = mask.to(device=act.device, dtype=torch.bool)
        part = act[real].double().sum(0)
        self.total = part if self.total is None else self.total + part
        self.count += int(real.sum())
        self.dtype = act.dtype

    def mean(self) -> Tensor:
        if self.total is None or self.count == 0:
            raise InputError("texts: no kept token to average (all are padding or leading positions left out)")
        return (self.total / self.count).to(self.dtype)


def _chunks(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    """Length-bucketed batches (texts sorted by length, so little padding), after checking the arguments."""
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise InputError("texts: expected a non-empty list of strings")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: expected a positive int, got {batch_size!r}")
    ordered = sorted(texts, key=len)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


LOGITS_BUDGET = 1 << 26
"""At most this many logits (`rows x positions x vocabulary`, 256 MB in float32) per forward pass in
`spliced_metrics`: batches of long texts or large vocabularies (Gemma's 262k) are split to fit."""


def _token_batches(model: HookedModel, texts: Sequence[str], batch_size: int) -> list[TokenBatch]:
    """`_chunks` tokenized, each split in halves (padding trimmed) until its logits fit `LOGITS_BUDGET`."""
    out: list[TokenBatch] = []
    todo = [model.to_tokens(chunk) for chunk in reversed(_chunks(texts, batch_size))]
    while todo:
        batch = todo.pop()
        width = int(batch.lengths.max())
        batch = TokenBatch(batch.input_ids[:, :width], batch.attention_mask[:, :width])
        n = batch.input_ids.shape[0]
        if n == 1 or n * width * model.cfg.d_vocab <= LOGITS_BUDGET:
            out.append(batch)
            continue
        half = n // 2
        todo.append(TokenBatch(batch.input_ids[half:], batch.attention_mask[half:]))
        todo.append(TokenBatch(batch.input_ids[:half], batch.attention_mask[:half]))
    return out


def _losses(logits: Tensor, other: Tensor | None, input_ids: Tensor, mask: Tensor) -> tuple[float, float, float]:
    """Summed next-token NLL of `logits` and of `other`, and summed KL(logits ‖ other), over the predictions
    where `mask [batch, pos - 1]` is true; float64, one row at a time (a row's log-probabilities only at
    its scored positions), so large vocabularies stay within memory."""
    nll_a = nll_b = kl = 0.0
    for r in range(logits.shape[0]):
        m = mask[r]
        if not bool(m.any()):
            continue
        target = input_ids[r, 1:][m][:, None]
        lp_a = torch.log_softmax(logits[r, :-1][m].double(), dim=-1)
        nll_a -= float(lp_a.gather(-1, target).sum())
        if other is not None:
            lp_b = torch.log_softmax(other[r, :-1][m].double(), dim=-1)
            nll_b -= float(lp_b.gather(-1, target).sum())
            kl += float((lp_a.exp() * (lp_a - lp_b)).sum())
    return nll_a, nll_b, kl
