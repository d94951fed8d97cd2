"""What a circuit explains: a logit, a difference of (mean) logits, or a transcoder feature's pre-activation.

Spec strings (the CLI's `--target`):

- `logit:40` — the logit of token "40";
- `logit:40-20` — logit("40") − logit("20");
- `logit:33,34,35-30,31,32` — mean of the first group's logits minus mean of the second's;
- `feature:L:F` — the pre-activation of feature F of layer L's transcoder (its activation when it fires);
- `greater-than:YY` — mean logit of the two-digit years after YY minus those up to it ("... to the year 17");
  `greater-than:1732` (a full year) means the same as `greater-than:32`, and the label names what was given.

A token is written as its text (tried as is, then with a leading space) or as `#ID`.

Where a tokenizer splits years into single digits (Llama 1/2, SmolLM2, Gemma: "1732" is "1","7","3","2"), the
token after "... to the year 17" is the year's tens digit, so `greater-than:YY` becomes the mean logit of the
tens digits above YY's minus those below it; YY's own tens digit is left out (its years fall on both sides),
which needs a tens digit of 1..8. A tokenizer with neither two-digit nor single-digit number tokens is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor

from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel


@dataclass(frozen=True)
class Target:
    """A target at position `pos` (negative counts from the end): `kind` "logit" (mean logit of `plus` minus
    mean logit of `minus`) or "feature" (pre-activation of `feature` in layer `layer`'s transcoder)."""

    kind: str
    plus: tuple[int, ...] = ()
    minus: tuple[int, ...] = ()
    layer: int = -1
    feature: int = -1
    pos: int = -1
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def position(self, n_pos: int) -> int:
        """The position as an index into a prompt of `n_pos` tokens."""
        q = self.pos + n_pos if self.pos < 0 else self.pos
        if not 0 <= q < n_pos:
            raise InputError(f"position: {self.pos} is outside a prompt of {n_pos} tokens", arg="position")
        return q

    def direction(self, model: HookedModel) -> Tensor:
        """`[d_model]`: mean of `W_U[:, plus]` minus mean of `W_U[:, minus]` (logit targets)."""
        W_U = model.W_U  # only the target's columns in float64: the whole of a real vocabulary is 200+ MB
        v = W_U[:, list(self.plus)].double().mean(1)
        return v - W_U[:, list(self.minus)].double().mean(1) if self.minus else v


def single_token(tokenizer: Any, text: str) -> int | None:
    """The id of `text` (or `" " + text`) where the tokenizer encodes it as one token other than its unknown
    token, else None."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for candidate in (text, " " + text):
        ids = tokenizer(candidate, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != unk:
            return int(ids[0])
    return None


def token_id(model: HookedModel, text: str, where: str = "target") -> int:
    """The id of one token written as text ("40", " 17") or `#ID`."""
    if text.startswith("#") and text[1:].isdecimal():
        i = int(text[1:])
        if not 0 <= i < model.cfg.d_vocab:
            raise InputError(f"{where}: token id {i} is outside the vocabulary (0..{model.cfg.d_vocab - 1})")
        return i
    tok = model.tokenizer
    if tok is None:
        raise InputError(f"{where}: the model has no tokenizer; write tokens as #ID")
    found = single_token(tok, text)
    if found is None:
        raise InputError(f"{where}: {text!r} is not a single known token (write it as one token's text or as #ID)")
    return found


def parse_target(spec: str, model: HookedModel, *, pos: int = -1) -> Target:
    """A `Target` from a spec string (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "logit" and rest:
        plus_s, sep, minus_s = rest.partition("-")
        plus = tuple(token_id(model, t) for t in plus_s.split(",") if t)
        minus = tuple(token_id(model, t) for t in minus_s.split(",") if t) if sep else ()
        if not plus or (sep and not minus):
            raise InputError(f"target: {spec!r}: expected logit:A, logit:A-B or logit:A,B-C,D")
        return Target("logit", plus, minus, pos=pos, label=spec)
    if kind == "feature":
        parts = rest.split(":")
        if len(parts) != 2 or not all(p.isdecimal() for p in parts):
            raise InputError(f"target: {spec!r}: expected feature:LAYER:FEATURE with two integers")
        layer, feature = int(parts[0]), int(parts[1])
        if not 0 <= layer < model.cfg.n_layers:
            raise InputError(f"target: layer {layer} is outside 0..{model.cfg.n_layers - 1}")
        return Target("feature", layer=layer, feature=feature, pos=pos, label=spec)
    if kind == "greater-than" and rest.isdecimal():
        return greater_than_target(model, rest, pos=pos)
    raise InputError(f"target: {spec!r}: expected logit:A, logit:A-B, logit:A,B-C,D, feature:L:F or greater-than:YY")


def greater_than_target(model: HookedModel, start_yy: int | str, *, pos: int = -1) -> Target:
    """Mean logit of the two-digit years after `start_yy` minus those up to it (the greater-than task);
    `start_yy` is YY (0..98) or a four-digit year. Single-digit number tokens: see the module docstring."""
    given = f"{start_yy:02d}" if isinstance(start_yy, int) else start_yy
    if not given.isdecimal() or len(given) not in (1, 2, 4):
        raise InputError(f"target: greater-than:{given}: expected YY (e.g. 32) or a year (e.g. 1732)")
    yy = int(given[-2:])
    if not 0 <= yy < 99:
        raise InputError(f"target: greater-than:YY needs YY in 0..98, got {given}")
    name = f"greater-than:{given}"
    tok = model.tokenizer
    if tok is None:
        raise InputError(f"target: {name} needs the model's tokenizer (or write the years' tokens as logit:#ID,...)")
    two = [single_token(tok, f"{n:02d}") for n in range(100)]
    if all(i is not None for i in two):
        return Target("logit", tuple(two[yy + 1 :]), tuple(two[: yy + 1]), pos=pos,  # type: ignore[arg-type]
                      label=f"{name}: mean logit(YY {yy + 1:02d}..99) - mean logit(YY 00..{yy:02d})")
    digits = [single_token(tok, str(d)) for d in range(10)]
    if any(i is None for i in digits):
        missing = next(f"{n:02d}" for n, i in enumerate(two) if i is None)
        raise InputError(f"target: {name} needs the years 00-99 as single tokens, or the digits 0-9 (this "
                         f"tokenizer splits {missing!r} and has no token for every digit)")
    tens = yy // 10
    if not 1 <= tens <= 8:
        raise InputError(f"target: {name}: this tokenizer splits years into digits, so the target is the next "
                         f"digit (the tens) above {tens} against below it, and one side is empty: use YY 10..89")
    return Target("logit", tuple(digits[tens + 1 :]), tuple(digits[:tens]), pos=pos,  # type: ignore[arg-type]
                  label=f"{name}: years split into digits: mean logit(next digit {tens + 1}..9) - "
                        f"mean logit(next digit 0..{tens - 1}) ({tens}, on both sides of {yy:02d}, left out)")


def logit_metric(logits: Tensor, target: Target, pos: int) -> Tensor:
    """The target's value from logits `[pos, d_vocab]` (logit targets)."""
    row = logits[pos].double()
    v = row[list(target.plus)].mean()
    return v - row[list(target.minus)].mean() if target.minus else v


def check_feature(target: Target, d_sae: int | None) -> None:
    if d_sae is None:
        raise InputError(f"target: no transcoder for layer {target.layer}")
    if not 0 <= target.feature < d_sae:
        raise InputError(f"target: feature {target.feature} is outside 0..{d_sae - 1}")

