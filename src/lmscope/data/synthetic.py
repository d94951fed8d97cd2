"""Synthetic corpus with known ground truth, deterministic from a seed (the public entry point).

Five kinds of one-line samples, each word separated by a single space (punctuation is its own word):

- "grammar": sentences of a small English grammar, a UPOS tag per word (neuron probing);
- "sequence": runs of consecutive items of a succession task ("Monday Tuesday Wednesday");
- "template": frames asking for an item's successor away from it ("the day after Monday is Tuesday");
- "greater_than": "from the year 1732 to the year 1789", end two-digit part larger (circuits);
- "topic": topic-labelled sentences where toxicity is confounded with topic (causal mediation).

The tiny models of `lmscope.model.zoo` are trained on this corpus, so every analysis can be checked
against answers known by construction. The generators live in `grammar`, `topics` and `sequences`;
this module assembles them and re-exports what users need.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from lmscope.data.grammar import GENERAL, Tagged, sentence
from lmscope.data.samples import (
    KINDS,
    UPOS_TAGS,
    EvalPrompt,
    GreaterThanPrompt,
    Sample,
    read_jsonl,
    write_jsonl,
)
from lmscope.data.sequences import (
    ALL_TASKS,
    CENTURIES,
    CYCLIC_TASKS,
    HELDOUT_TEMPLATE_ITEMS,
    ROMAN_NUMERALS,
    ROMAN_RUN_RATE,
    ROMAN_TASK,
    RUN_LENGTHS,
    SUCCESSION_TASKS,
    choose_task,
    greater_than_sample,
    queryable_items,
    run_sample,
    successor,
    template_query,
    template_sample,
)
from lmscope.data.topics import TOPICS, TOXIC_WORDS, TOXICITY_RATE_BY_TOPIC, topic_sentence
from lmscope.errors import InputError

__all__ = [
    "ALL_TASKS",
    "CENTURIES",
    "CYCLIC_TASKS",
    "DEFAULT_MIX",
    "HELDOUT_TEMPLATE_ITEMS",
    "KINDS",
    "ROMAN_NUMERALS",
    "ROMAN_TASK",
    "SPLITS",
    "SUCCESSION_TASKS",
    "TOPICS",
    "TOXICITY_RATE_BY_TOPIC",
    "TOXIC_WORDS",
    "UPOS_TAGS",
    "YY_TOKENS",
    "EvalPrompt",
    "GreaterThanPrompt",
    "Sample",
    "generate_corpus",
    "greater_than_prompts",
    "read_jsonl",
    "successor",
    "successor_eval_prompts",
    "write_jsonl",
]

DEFAULT_MIX: dict[str, float] = {
    "grammar": 0.25,
    "sequence": 0.2,
    "template": 0.3,
    "greater_than": 0.1,
    "topic": 0.15,
}
"""Share of each kind in `generate_corpus` when no `mix` is given."""

SPLITS: tuple[str, ...] = ("train", "heldout")
"""`train`: templates never query `HELDOUT_TEMPLATE_ITEMS`; `heldout`: templates query any item."""

YY_TOKENS: tuple[str, ...] = tuple(f"{yy:02d}" for yy in range(100))
"""The two-digit year tokens "00".."99" (greater-than answers), each one token."""


def _check_mix(mix: Mapping[str, float] | None) -> tuple[list[str], list[float]]:
    """Validate `mix` and return the kinds with positive weight and their weights."""
    if mix is None:
        mix = DEFAULT_MIX
    if not isinstance(mix, Mapping) or not mix:
        raise InputError(f"mix: expected a non-empty dict of kind -> weight, got {mix!r}")
    unknown = sorted(set(mix) - set(KINDS))
    if unknown:
        raise InputError(f"mix: unknown kind(s) {', '.join(map(repr, unknown))}; expected {', '.join(KINDS)}")
    for kind, w in mix.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise InputError(f"mix: weight of {kind!r} is {w!r}; expected a finite number >= 0")
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    if not kinds:
        raise InputError(f"mix: all weights are zero ({dict(mix)}); expected at least one positive")
    return kinds, [float(mix[k]) for k in kinds]


def _sample(
    kind: str, words: Tagged, *, items: list[int] | None = None, **kwargs: object
) -> Sample:
    """Wrap tagged words (and per-word item indices) into a `Sample`."""
    return Sample.from_words(
        (w for w, _ in words),
        kind,
        pos=(t for _, t in words),
        item_positions=None if items is None else tuple(items),
        **kwargs,
    )


def generate_one(rng: random.Random, kind: str, split: str = "train") -> Sample:
    """One sample of `kind` drawn with `rng` (see `generate_corpus`)."""
    if kind == "grammar":
        return _sample("grammar", sentence(rng, GENERAL))
    if kind == "topic":
        topic = rng.choice(TOPICS)
        words, toxic, toxic_word = topic_sentence(rng, topic)
        return _sample("topic", words, topic=topic, toxic=toxic, meta={"toxic_word": toxic_word})
    if kind == "sequence":
        task = ROMAN_TASK if rng.random() < ROMAN_RUN_RATE else choose_task(rng)
        words, items, meta = run_sample(rng, task, rng.randint(*RUN_LENGTHS))
        return _sample("sequence", words, items=items, task=task, meta=meta)
    if kind == "template":
        task = choose_task(rng)
        words, items, meta = template_sample(rng, task, template_query(rng, task, split))
        return _sample("template", words, items=items, task=task, meta=meta)
    if kind == "greater_than":
        words, meta = greater_than_sample(rng)
        return _sample("greater_than", words, meta=meta)
    raise InputError(f"kind: got {kind!r}, expected one of {', '.join(KINDS)}")


def generate_corpus(
    n_samples: int,
    *,
    seed: int = 0,
    split: str = "train",
    mix: Mapping[str, float] | None = None,
) -> list[Sample]:
    """`n_samples` samples, the same for the same arguments (a shorter corpus is a prefix of a longer).

    `mix` maps kinds to relative weights (normalised; missing kinds get 0), default `DEFAULT_MIX`.
    `split="train"` keeps `HELDOUT_TEMPLATE_ITEMS` out of template queries; `split="heldout"` does not.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 0:
        raise InputError(f"n_samples: got {n_samples!r}, expected an integer >= 0")
    if split not in SPLITS:
        raise InputError(f"split: got {split!r}, expected one of {', '.join(SPLITS)}")
    kinds, weights = _check_mix(mix)
    kind_rng = random.Random(f"lmscope-kinds:{seed}")
    rng = random.Random(f"lmscope-corpus:{seed}:{split}")
    cum = [sum(weights[: i + 1]) for i in range(len(weights))]
    drawn = kind_rng.choices(kinds, cum_weights=cum, k=n_samples)  # sequential draws: prefix-stable
    return [generate_one(rng, kind, split) for kind in drawn]


def successor_eval_prompts(
    n_per_task: int = 50, *, seed: int = 1, include_ood: bool = True
) -> list[EvalPrompt]:
    """For each task, `n_per_task` sequence prompts and `n_per_task` template prompts (deterministic).

    Sequence prompts end after a run of 3-5 items (or "... Wednesday and"); the answer is the next item.
    Template prompts are frames cut right before the successor. Template queries cover every held-out
    item first, then are drawn from all queryable items; `heldout_item` says which were held out.
    `include_ood` adds the roman numerals task (never templated in training).
    """
    if isinstance(n_per_task, bool) or not isinstance(n_per_task, int) or n_per_task < 0:
        raise InputError(f"n_per_task: got {n_per_task!r}, expected an integer >= 0")
    tasks = list(SUCCESSION_TASKS) + ([ROMAN_TASK] if include_ood else [])
    prompts: list[EvalPrompt] = []
    for task in tasks:
        rng = random.Random(f"lmscope-eval:{seed}:{task}")
        held = HELDOUT_TEMPLATE_ITEMS.get(task, set())
        for _ in range(n_per_task):
            words, items, _meta = run_sample(rng, task, rng.randint(4, 6), allow_compact=False)
            last = max(i for i, p in enumerate(items) if p >= 0)
            query = next(words[i][0] for i in range(last - 1, -1, -1) if items[i] >= 0)
            prompts.append(
                EvalPrompt(
                    prompt=" ".join(w for w, _ in words[:last]),
                    answer=words[last][0],
                    task=task,
                    kind="sequence",
                    heldout_item=task == ROMAN_TASK or query in held,
                    query=query,
                )
            )
        queries = sorted(held, key=ALL_TASKS[task].index)[:n_per_task]
        pool = queryable_items(task)
        queries += [rng.choice(pool) for _ in range(n_per_task - len(queries))]
        for query in queries:
            words, _items, meta = template_sample(rng, task, query, allow_quoted=False)
            cut = len(words) - 1 - [w for w, _ in words][::-1].index(meta["answer"])
            prompts.append(
                EvalPrompt(
                    prompt=" ".join(w for w, _ in words[:cut]),
                    answer=meta["answer"],
                    task=task,
                    kind="template",
                    heldout_item=bool(meta["heldout_item"]),
                    query=query,
                )
            )
    return prompts


def greater_than_prompts(n: int, *, seed: int = 2) -> list[GreaterThanPrompt]:
    """`n` greater-than prompts ending with the end year's century ("... to the year 17")."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"n: got {n!r}, expected an integer >= 0")
    rng = random.Random(f"lmscope-greater-than:{seed}")
    prompts = []
    for _ in range(n):
        words, meta = greater_than_sample(rng)
        texts = [w for w, _ in words]
        end_word = f"{meta['century']}{meta['end_yy']:02d}"
        cut = len(texts) - 1 - texts[::-1].index(end_word)
        prompt = " ".join([*texts[:cut], str(meta["century"])])
        prompts.append(GreaterThanPrompt(prompt=prompt, century=meta["century"], start_yy=meta["start_yy"]))
    return prompts
