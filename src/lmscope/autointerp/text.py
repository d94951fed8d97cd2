"""Autointerp on the user's own text: run the model over a corpus and make token-level records.

A store's records are sentences of words (`lmscope extract` aligns tokens to words, so the BOS position is
never a row). Here the model runs on documents as its own tokenizer encodes them, and a record is one
document (or context window) with the unit's activation on each of its tokens. Positions the model uses as
attention sinks are left out of the records by the dictionaries' rule, `lmscope.dictionary.positions.
PositionRule`: the BOS position when the model prepends one, and the first `exclude_first` text tokens the
user excludes. For a dictionary's features the rule it was trained with (its cfg's `exclude_first`) is the
default, so its records show the positions it was trained on and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel

if TYPE_CHECKING:  # imported where used: autointerp on a store needs nothing from lmscope.dictionary
    from lmscope.dictionary.positions import PositionRule

Progress = Callable[[str, int, int], None]
_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def token_string(text: str) -> str:
    """A token as one visible word for records: surrounding whitespace dropped, whitespace inside (or a token
    that is only whitespace) shown as ␣ ↵ ⇥, so a record's words never contain a space, tab or newline (the
    explainers join words with spaces and LLM prompts put one word per line)."""
    core = text.strip()
    shown = "".join(_VISIBLE.get(c, c) for c in (core or text))
    return shown or "∅"


@dataclass
class TextActivations:
    """Activations at the kept token positions of a corpus, as record rows.

    `contexts[i]` are the visible token strings (`token_string`) of the kept positions of text
    `text_index[i]` (texts with no kept position are dropped); `acts[point]` is `[rows, n_units]`, rows in
    the order of `contexts`' tokens, columns the chosen units of that point.
    """

    contexts: list[list[str]]
    text_index: list[int]
    acts: dict[str, Tensor]
    rule: PositionRule
    n_positions: int
    """Real token positions before the rule (kept + left out)."""

    @property
    def n_rows(self) -> int:
        return sum(len(c) for c in self.contexts)


def point_width(model: HookedModel, point: str) -> int:
    """Width of one token's activation at `point` (`hook_z` flattened over heads)."""
    from lmscope.activations.collect import point_dim

    return point_dim(model, point)


def text_activations(model: HookedModel, texts: Sequence[str], columns: dict[str, Sequence[int]], *,
                     rule: PositionRule, dictionary: Any = None, batch_size: int = 16,
                     progress: Callable[[int, int], None] | None = None) -> TextActivations:
    """Capture `columns[point]` of each point (or, with `dictionary`, those features of its encoding of
    `dictionary.cfg.hook_name`) at the positions `rule` keeps, over `texts` in length-sorted batches."""
    names = list(columns)
    model.check_names(names)
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    index = {p: torch.as_tensor(list(c), dtype=torch.long) for p, c in columns.items()}
    per_text: dict[int, tuple[list[str], dict[str, Tensor]]] = {}
    n_positions = 0
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for b, chunk in enumerate(batches):
        batch = model.to_tokens([texts[i] for i in chunk])
        with torch.inference_mode():
            _, cache = model.run_with_cache(batch, names=names, return_logits=False)
        kept = rule.kept(batch).cpu()
        n_positions += int(batch.attention_mask.sum())
        ids = batch.input_ids.cpu()
        for p in names:
            t = cache[p].reshape(*cache[p].shape[:2], -1)
            if dictionary is not None:
                with torch.inference_mode():
                    t = dictionary.encode(t.to(dictionary.cfg.torch_dtype))
            cache[p] = t[..., index[p].to(t.device)].float().cpu()
        for row, i in enumerate(chunk):
            where = kept[row].nonzero().squeeze(1)
            if len(where) == 0:
                continue
            words = [token_string(model.tokenizer.decode([int(t)])) for t in ids[row, where]]
            per_text[i] = (words, {p: cache[p][row, where] for p in names})
        if progress is not None:
            progress(b + 1, len(batches))
    kept_texts = sorted(per_text)
    if not kept_texts:
        raise InputError(f"texts: no token left to score after the rule ({rule.describe()}); the texts are "
                         "too short")
    acts = {p: torch.cat([per_text[i][1][p] for i in kept_texts]) for p in names}
    return TextActivations([per_text[i][0] for i in kept_texts], kept_texts, acts, rule, n_positions)


def choose_columns(model: HookedModel, points: Sequence[str], units_per_point: int | None, seed: int,
                   dictionary: Any = None) -> dict[str, list[int]]:
    """The units to score per point: all, or a seeded sample of `units_per_point` (as `score_store` picks)."""
    from lmscope.autointerp.result import pick_units

    model.check_names(list(points))
    bad = [p for p in points if p.endswith(("hook_pattern", "hook_attn_scores"))]
    if bad:
        raise InputError(f"points: {bad[0]} is an attention pattern [head, query, key], not one vector per token; "
                         "expected residual, MLP or hook_z points", arg="points")
    out = {}
    for p in points:
        width = dictionary.cfg.d_sae if dictionary is not None else point_width(model, p)
        out[p] = pick_units(width, units_per_point, seed, p)
    return out


def check_dictionary(model: HookedModel, dictionary: Any, arg: str = "dictionary") -> str:
    """The dictionary's input hook point, after checking the model has it with the dictionary's width (errors
    name `arg`)."""
    hook = str(dictionary.cfg.hook_name)
    model.check_names([hook])
    width = point_width(model, hook)
    if int(dictionary.cfg.d_in) != width:
        raise InputError(f"{arg}: the dictionary reads {dictionary.cfg.d_in} dimensions at {hook}, but this model "
                         f"has {width} there (a dictionary of another model?)", arg=arg)
    return hook
