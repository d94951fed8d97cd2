"""Which token positions a dictionary sees: real tokens, minus the positions the model uses as attention sinks.

Real LMs park attention on the first position of a sequence (an "attention sink") and give it activations
that are outliers by orders of magnitude: the BOS token when one is prepended, and often the first text token
when none is. A dictionary trained on those rows spends capacity on them, its metrics are dominated by them,
and its top examples are the sink rather than text. So every dictionary path uses ONE rule, `PositionRule`:

    kept(p)  =  p is a real token (not padding)
                and p >= int(prepend_bos) + exclude_first

`prepend_bos` is whether the tokens start with a BOS (`HookedModel.prepend_bos`, what the tokenizer adds or
the user asked for); `exclude_first` is how many further leading text tokens the user leaves out
(`--exclude-first N`). Training rows (`ActivationBuffer`), evaluation rows and losses
(`dictionary_metrics`, `spliced_metrics`), feature top examples and densities (`feature_reports`) all call
`kept_positions` / `scored_positions`; the rule a dictionary was trained with is recorded in its cfg.json
(`prepend_bos`, `exclude_first`) and read back by `PositionRule.for_dictionary`, so autointerp records and
other readers can apply the same rule to a saved dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lmscope.errors import bad_argument
from lmscope.model.inputs import TokenBatch


def kept_positions(batch: TokenBatch, *, prepend_bos: bool, exclude_first: int = 0) -> Tensor:
    """Bool `[batch, pos]`: the positions a dictionary is trained on, evaluated on and shown at.

    Real tokens (attention mask 1) from position `int(prepend_bos) + exclude_first` on; the BOS position and
    the first `exclude_first` text tokens of every row are left out (padding is on the right, so the leading
    positions are the same in every row).
    """
    _check_exclude_first(exclude_first)
    mask = batch.attention_mask.bool().clone()
    mask[:, : int(prepend_bos) + exclude_first] = False
    return mask


def scored_positions(batch: TokenBatch, *, prepend_bos: bool, exclude_first: int = 0) -> Tensor:
    """Bool `[batch, pos - 1]`: positions whose next-token prediction is scored (loss, KL).

    A prediction made at position p counts when p is kept (`kept_positions`) and the token it predicts,
    p + 1, is real. The prediction made at the BOS position sees no text (only the model's unigram guess of
    the first token), and a dictionary is not spliced at positions it was not trained on, so neither kind of
    position would measure the dictionary on text.
    """
    kept = kept_positions(batch, prepend_bos=prepend_bos, exclude_first=exclude_first)
    return kept[:, :-1] & batch.attention_mask[:, 1:].bool()


def _check_exclude_first(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise bad_argument("exclude_first", "a non-negative number of positions", n)
    return n


@dataclass(frozen=True)
class PositionRule:
    """`kept_positions` / `scored_positions` with their settings bound: one object to pass around and record."""

    prepend_bos: bool
    exclude_first: int = 0

    def __post_init__(self) -> None:
        _check_exclude_first(self.exclude_first)

    @property
    def n_leading(self) -> int:
        """How many leading positions of every row are left out (BOS plus `exclude_first`)."""
        return int(self.prepend_bos) + self.exclude_first

    def kept(self, batch: TokenBatch) -> Tensor:
        """Bool `[batch, pos]` (see `kept_positions`)."""
        return kept_positions(batch, prepend_bos=self.prepend_bos, exclude_first=self.exclude_first)

    def scored(self, batch: TokenBatch) -> Tensor:
        """Bool `[batch, pos - 1]` (see `scored_positions`)."""
        return scored_positions(batch, prepend_bos=self.prepend_bos, exclude_first=self.exclude_first)

    def describe(self) -> str:
        """One line for summaries: which positions are left out."""
        parts = (["the BOS position"] if self.prepend_bos else []) + (
            [f"the first {self.exclude_first} text token{'s' if self.exclude_first != 1 else ''}"]
            if self.exclude_first else [])
        return f"left out: {' and '.join(parts)}" if parts else "no position left out (no BOS)"

    def to_dict(self) -> dict[str, Any]:
        return {"prepend_bos": self.prepend_bos, "exclude_first": self.exclude_first,
                "excluded_leading_positions": self.n_leading}

    @classmethod
    def for_model(cls, model: Any, exclude_first: int = 0) -> PositionRule:
        """The rule for text as `model` tokenizes it now (`model.prepend_bos`)."""
        return cls(bool(getattr(model, "prepend_bos", False)), exclude_first)

    @classmethod
    def for_dictionary(cls, model: Any, dictionary: Any, exclude_first: int | None = None) -> PositionRule:
        """The rule a saved dictionary was trained with: `exclude_first` from its cfg (unless given), the BOS
        as `model` tokenizes now (load the model with the dictionary's recorded `prepend_bos` to match)."""
        recorded = getattr(getattr(dictionary, "cfg", None), "exclude_first", 0) or 0
        return cls.for_model(model, recorded if exclude_first is None else exclude_first)


SINK_RATIO = 5.0
"""`first_position_note` flags position 0 when its mean norm is this many times above or below the others'."""


def first_position_note(model: Any, texts: list[str], hook: str, rule: PositionRule) -> str | None:
    """A one-line note when the first kept position of `texts` looks like an attention sink at `hook`, else None.

    Only where nothing leading is left out (no BOS, `exclude_first` 0): then position 0 is a text token, yet
    real LMs often make it the sink anyway (SmolLM2-135M: residual norm ~23,000 at position 0 against ~170
    elsewhere, MLP output 2.5 against 35). The test: the mean norm of `hook` at position 0 over `texts`
    against the median norm at later positions, flagged beyond a factor `SINK_RATIO` either way.
    """
    if rule.n_leading or not texts:
        return None
    batch = model.to_tokens(texts)
    _, cache = model.run_with_cache(batch, names=[hook], return_logits=False)
    norms = cache[hook].float().norm(dim=-1)
    later = kept_positions(batch, prepend_bos=False, exclude_first=1)
    if not bool(later.any()):
        return None
    first, rest = float(norms[:, 0].mean()), float(norms[later].median())
    ratio = first / rest if rest > 0 else float("inf")
    if 1 / SINK_RATIO <= ratio <= SINK_RATIO:
        return None
    return (f"position 0 looks like an attention sink at {hook} (mean norm {first:.3g} against {rest:.3g} at later "
            "positions) though it is a text token; consider --exclude-first 1")
