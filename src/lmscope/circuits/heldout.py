"""Held-out prompts for a circuit: the same task as the traced prompt, with prompts the search never saw.

Two sources (the CLI's `--heldout`):

- a file: JSONL rows `{"prompt": ..., "target": ...}` (`.jsonl`), or one prompt per line, optionally
  `prompt<TAB>target`; a row without a target uses the traced one's `--target` spec;
- a built-in task, made from the traced prompt by substituting its fillers, so the template (and, where the
  tokenizer allows, every token position) stays the same and the target moves with the fillers:
  `days` and `months` (a run shifted to start elsewhere: "Monday, Tuesday," -> "Thursday, Friday,"), `numbers`
  (number words, or integers, shifted), `ioi` (the names replaced by other names), `greater-than` (the year
  "1732" and the century "17" that ends the prompt replaced by another year; the target must be
  `greater-than:YY` and is rebuilt for the new year). A logit target's tokens are substituted like the prompt
  ("logit: Friday- Monday" -> "logit: Sunday- Wednesday"); a feature target stays the same feature.

Built-in cases whose token count differs from the traced prompt's, or whose target token is not a single
token after substitution, are skipped (and listed); the traced prompt itself is never a held-out case.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from lmscope.circuits.faithfulness import HeldoutCase
from lmscope.circuits.targets import Target, greater_than_target, parse_target, single_token
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
NAMES = ("Mary", "John", "Anna", "James", "Sarah", "David", "Emma", "Michael", "Laura", "Robert", "Alice", "Paul",
         "Kate", "Mark", "Lisa", "Peter", "Jane", "Tom", "Susan", "George", "Helen", "Frank", "Rachel", "Daniel",
         "Julia", "Steven", "Linda", "Kevin", "Emily", "Brian", "Grace", "Henry")
TASKS = ("days", "months", "numbers", "ioi", "greater-than")
YEAR = re.compile(r"\b(1[1-9])(\d\d)\b")


def read_cases(path: str | Path, model: HookedModel, default_target: str, *, position: int = -1,
               limit: int | None = None) -> list[HeldoutCase]:
    """The held-out cases of a file (see the module docstring), at most `limit`."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{p}: cannot read it ({err.__class__.__name__}: {err})") from None
    cases = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p} line {number}"
        if p.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(
                    row.get("target", default_target), str):
                raise InputError(f'{where}: expected {{"prompt": "...", "target": "logit:..."}} (target optional)')
            prompt, spec = row["prompt"], row.get("target", default_target)
        else:
            prompt, _, spec = line.partition("\t")
            spec = spec.strip() or default_target
        try:
            cases.append(HeldoutCase(prompt, parse_target(spec, model, pos=position)))
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        if limit is not None and len(cases) >= limit:
            break
    if not cases:
        raise InputError(f"{p}: holds no prompts")
    return cases


Swap = Callable[[str], str]
"""A substitution: each whole word of a text (a run of letters or digits) to its replacement (or itself)."""


def _substitute(text: str, swap: Swap) -> str:
    """Every whole word of `text` replaced by `swap` at once (so a shift never moves a word twice)."""
    return re.sub(r"\b\w+\b", lambda m: swap(m.group(0)), text)


def _map_target(model: HookedModel, target: Target, swap: Swap) -> Target | None:
    """A logit target with each token's text substituted (None if one is no longer a single token)."""
    if target.kind != "logit":
        return target
    tok = model.tokenizer

    def one(i: int) -> int | None:
        text = _substitute(tok.decode([i]), swap)  # " Friday" -> " Sunday": tried as is, then stripped
        return single_token(tok, text) if single_token(tok, text) is not None else single_token(tok, text.strip())

    plus, minus = [one(i) for i in target.plus], [one(i) for i in target.minus]
    if None in plus or None in minus:
        return None
    label = "logit:" + ",".join(tok.decode([i]) for i in plus)  # type: ignore[list-item]
    if minus:
        label += "-" + ",".join(tok.decode([i]) for i in minus)  # type: ignore[list-item]
    return replace(target, plus=tuple(plus), minus=tuple(minus), label=label)  # type: ignore[arg-type]


def _target_text(model: HookedModel, target: Target) -> str:
    return " ".join(model.tokenizer.decode([i]) for i in (*target.plus, *target.minus))


def _shifts(text: str, words: tuple[str, ...], wrap: bool) -> list[Swap]:
    """Shift every word of `words` by k places, for each k that keeps those in `text` (prompt and target) in."""
    idx = [i for i, w in enumerate(words) if re.search(rf"\b{re.escape(w)}\b", text)]
    if not idx:
        return []
    n = len(words)
    ks = [k for k in range(1, n) if wrap or max(idx) + k < n] + [-k for k in range(1, n) if not wrap and min(idx) >= k]
    table = {w: i for i, w in enumerate(words)}

    def shift(k: int) -> Swap:
        return lambda w: words[(table[w] + k) % n] if w in table and (wrap or 0 <= table[w] + k < n) else w

    return [shift(k) for k in ks]


def _integer_shifts(text: str) -> list[Swap]:
    """Add k to every integer, for each k in -50..50 that keeps every integer of `text` non-negative and of its
    digit count (so a tokenizer that splits digits keeps the token count)."""
    nums = [w for w in re.findall(r"\b\d+\b", text)]

    def ok(w: str, k: int) -> bool:
        return int(w) + k >= 0 and len(str(int(w) + k)) == len(w)

    def shift(k: int) -> Swap:
        return lambda w: str(int(w) + k) if w.isdecimal() and ok(w, k) else w

    return [shift(k) for k in sorted(range(-50, 51), key=lambda k: (abs(k), k))
            if k and nums and all(ok(w, k) for w in nums)]


def builtin_cases(model: HookedModel, prompt: str, target: Target, task: str, n: int, *, seed: int = 0
                  ) -> tuple[list[HeldoutCase], list[str]]:
    """Up to `n` held-out cases of `task` made from `prompt` and `target` (see the module docstring), and the
    candidate prompts skipped with why."""
    if task not in TASKS:
        raise InputError(f"task: {task!r} is neither a file nor a built-in task ({', '.join(TASKS)})", arg="task")
    if n < 1:
        raise InputError(f"n: expected a positive number of prompts, got {n}")  # the CLI checks --heldout-n first
    if model.tokenizer is None:
        raise InputError("model: built-in held-out tasks need the model's tokenizer")
    rng = random.Random(seed)
    candidates: list[tuple[str, Callable[[], Target | None]]] = []
    if task == "greater-than":
        candidates = _greater_than(model, prompt, target, rng)
    else:
        text = prompt + " " + _target_text(model, target)
        if task == "days":
            maps = _shifts(text, DAYS, wrap=True)
        elif task == "months":
            maps = _shifts(text, MONTHS, wrap=True)
        elif task == "numbers":
            maps = _shifts(text, NUMBER_WORDS, wrap=False) or _integer_shifts(text)
        else:
            maps = _names(text, rng, 4 * n)
        if not maps:
            raise InputError(f"task: {task}: the prompt has no {task} to substitute ({prompt!r})", arg="task")
        candidates = [(_substitute(prompt, m), partial(_map_target, model, target, m)) for m in maps]
    return _keep(model, prompt, candidates, n)


def _keep(model: HookedModel, prompt: str, candidates: list[tuple[str, Callable[[], Target | None]]], n: int
          ) -> tuple[list[HeldoutCase], list[str]]:
    length = len(model.tokenizer(prompt)["input_ids"])
    cases: list[HeldoutCase] = []
    skipped: list[str] = []
    seen = {prompt}
    for text, make in candidates:
        if len(cases) >= n:
            break
        if text in seen:
            continue
        seen.add(text)
        if len(model.tokenizer(text)["input_ids"]) != length:
            skipped.append(f"{text!r}: another number of tokens")
            continue
        t = make()
        if t is None:
            skipped.append(f"{text!r}: the target is not a single token there")
            continue
        cases.append(HeldoutCase(text, t))
    if not cases:
        raise InputError("prompt: no held-out prompt could be made from it (" +
                         ("; ".join(skipped[:3]) or "nothing to substitute") + ")")
    return cases, skipped


def _names(text: str, rng: random.Random, n: int) -> list[Swap]:
    """Up to `n` random renamings of the names in `text` to other names, each name to a different one."""
    found = [w for w in NAMES if re.search(rf"\b{w}\b", text)]
    if not found:
        return []
    others = [w for w in NAMES if w not in found]
    maps = [dict(zip(found, rng.sample(others, len(found)), strict=True)) for _ in range(n)]
    return [partial(_rename, m) for m in maps]


def _rename(mapping: dict[str, str], word: str) -> str:
    return mapping.get(word, word)


def _greater_than(model: HookedModel, prompt: str, target: Target, rng: random.Random
                  ) -> list[tuple[str, Callable[[], Target | None]]]:
    if not target.label.startswith("greater-than:"):
        raise InputError("target: the greater-than task needs a greater-than:YY target (rebuilt for each held-out "
                         "year)")
    years = YEAR.findall(prompt)
    if not years or not re.search(rf"\b{years[-1][0]}\s*$", prompt):
        raise InputError(f"prompt: greater-than: expected a year such as 1732 and the prompt ending with its "
                         f"century (\"... to the year 17\"), got {prompt!r}")
    century, yy = years[-1]
    pairs = [(c, y) for c in range(11, 20) for y in range(10, 90) if (c, y) != (int(century), int(yy))]
    rng.shuffle(pairs)
    out: list[tuple[str, Callable[[], Target | None]]] = []
    for c, y in pairs:
        text = re.sub(rf"\b{century}{yy}\b", f"{c}{y:02d}", prompt)
        text = re.sub(rf"\b{century}(\s*)$", rf"{c}\g<1>", text)
        out.append((text, partial(greater_than_target, model, y, pos=target.pos)))
    return out
