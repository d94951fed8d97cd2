"""What patching and mediation read: input files, outcome specs, `py:MODULE:FUNCTION` plugins, positions and
the components to patch.

The CLI passes strings through; everything here checks them and names the argument at fault by its Python
name (`InputError.arg`), which the CLI turns into its flag. `check_outcome` needs no model, so a bad spec
is refused before one loads; `make_outcome` then builds the scorer.

`py:MODULE:FUNCTION` imports MODULE and so runs its code (`PLUGIN_HELP` says so wherever it is offered).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmscope.errors import InputError

OUTCOMES = ("toxicity", "log-toxicity", "toxicity-hit", "toxicity-continuation", "logit-diff", "prob",
            "classifier:PATH", "py:MODULE:FUNCTION")
"""Outcome specs: a lexicon's mass or hit rate (of the next token or a greedy continuation), a logit
difference, a probability, a local HF classifier on the continuation, or the user's own function."""
PLUGIN_HELP = ("py:MODULE:FUNCTION imports MODULE (from the current directory or the Python path) and runs its "
               "code: use only code you trust.")
EACH = "each"
"""Position spec: every position on its own, up to the shortest input."""
NOT_DIFFERENTIABLE = ("toxicity-hit", "toxicity-continuation", "classifier:")
"""Outcomes with no gradient (argmax or decoding): attribution patching cannot estimate their effects."""


def read_texts(path: str, field: str = "text") -> list[str]:
    """Inputs from a text file (one per non-blank line) or a .jsonl file (the `field` of each row)."""
    from lmscope.data.lines import read_lines

    if Path(path).suffix == ".jsonl":
        return [str(row[field]) for row in read_rows(path, [field])]
    texts = [line for line in read_lines(path) if line.strip()]
    if not texts:
        raise InputError(f"{path}: no inputs (expected one per line)")
    return texts


def read_rows(path: str, fields: list[str]) -> list[dict[str, Any]]:
    """JSONL rows, each required to carry `fields`; errors name the file and line."""
    from lmscope.data.lines import json_lines

    rows = []
    for where, row in json_lines(path, f"expected an object with {', '.join(fields)}"):
        missing = [f for f in fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise InputError(f"{where}: missing field {missing[0]!r} (expected {', '.join(fields)})")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def check_outcome(outcome: str, target: str | None, foil: str | None, *, arg: str = "outcome") -> None:
    """Refuse an unknown outcome spec, or one missing its target/foil token; `arg` names the spec's argument."""
    if outcome.startswith(("classifier:", "py:")):
        return
    if outcome not in OUTCOMES:
        raise InputError(f"{arg}: got {outcome!r}, expected one of {', '.join(OUTCOMES)}", arg=arg)
    if outcome in ("logit-diff", "prob") and target is None:
        raise InputError(f"target: required for {outcome}", arg="target")
    if outcome == "logit-diff" and foil is None:
        raise InputError("foil: required for logit-diff", arg="foil")


def check_outcome_files(outcome: str, lexicon: str | None, *, arg: str = "outcome") -> None:
    """What an outcome spec reads, checked before any model loads: the plugin module (imported: it runs its
    code, as `make_outcome` would), the classifier directory, the lexicon file."""
    if outcome.startswith("py:"):
        load_plugin(outcome.removeprefix("py:"), arg=arg)
    elif outcome.startswith("classifier:"):
        path = Path(outcome.removeprefix("classifier:"))
        if not path.is_dir():
            raise InputError(f"{arg}: classifier:{path}: no such directory (expected a local HF classifier)",
                             arg=arg)
    if lexicon is not None:
        read_texts(lexicon)


def check_differentiable(outcome: str, *, arg: str = "outcome") -> None:
    """Refuse an outcome attribution patching cannot differentiate."""
    if outcome.startswith(NOT_DIFFERENTIABLE):
        raise InputError(f"{arg}: {outcome} has no gradient (argmax or decoding), so attribution patching cannot "
                         "estimate its effects; patch exactly or use a smooth outcome (logit-diff, prob, toxicity, "
                         "log-toxicity)", arg=arg)


def default_outcome(model: str, outcome: str | None) -> str:
    """`outcome`, or for a zoo model without one the synthetic corpus's toxicity; any other model must name one
    (on a real LM the synthetic insult lexicon gives effects near 1e-5, which would read as "no mediation")."""
    if outcome is not None:
        return outcome
    if model.startswith("zoo:"):
        return "toxicity"
    raise InputError(f"outcome: {model} is not a zoo model, so name the outcome to measure: logit-diff "
                     "--target T --foil F, prob --target T, toxicity|log-toxicity|toxicity-hit|toxicity-continuation "
                     "--lexicon WORDS.txt, classifier:PATH (a local HF classifier on the continuation) or "
                     "py:MODULE:FUNCTION", arg="outcome")


def make_outcome(model: Any, outcome: str, target: str | None, foil: str | None, lexicon: str | None,
                 n_tokens: int = 8, *, arg: str = "outcome") -> Any:
    """The scorer an outcome spec names, on `model`: `score(output, index) -> [rows]`."""
    from lmscope.causal import continuation, scorers

    check_outcome(outcome, target, foil, arg=arg)
    if outcome.startswith("classifier:"):
        return continuation.continuation_classifier(model, outcome.removeprefix("classifier:"), n_tokens=n_tokens)
    if outcome.startswith("py:"):
        return scorers.callable_outcome(load_plugin(outcome.removeprefix("py:"), arg=arg))
    if outcome == "logit-diff":
        return scorers.logit_diff(model, target, foil)  # type: ignore[arg-type]
    if outcome == "prob":
        return scorers.target_prob(model, target)  # type: ignore[arg-type]
    words = scorers.TOXIC_WORDS if lexicon is None else read_texts(lexicon)
    if outcome == "toxicity-hit":
        return scorers.lexicon_hit(model, words)
    if outcome == "toxicity-continuation":
        return continuation.continuation_lexicon_rate(model, words, n_tokens=n_tokens)
    return scorers.lexicon_mass(model, words, log=outcome == "log-toxicity")


def load_plugin(spec: str, *, arg: str = "outcome") -> Callable[..., Any]:
    """`MODULE:FUNCTION` importable from the current directory or the Python path: `fn(logits, index)`.

    Importing runs the module's code (see PLUGIN_HELP). The current directory is on `sys.path` only while
    importing: `sys.path` is restored afterwards, so later imports cannot pick up files from it."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise InputError(f"{arg}: py:{spec}: expected py:MODULE:FUNCTION", arg=arg)
    saved = list(sys.path)
    sys.path.insert(0, os.getcwd())
    try:
        fn = getattr(importlib.import_module(module), name)
    except Exception as e:  # the user's module failed to import (missing, a syntax error, its own exception)
        raise InputError(f"{arg}: py:{spec}: cannot load it ({type(e).__name__}: {e})", arg=arg) from None
    finally:
        sys.path[:] = saved
    if not callable(fn):
        raise InputError(f"{arg}: py:{spec}: {name} is not callable", arg=arg)
    return fn


def parse_position(text: str, *, arg: str = "position") -> int | str | None:
    """`last` -> -1 (each input's last token), `all` -> None (every position at once), `each` -> EACH, or an
    index."""
    if text == "last":
        return -1
    if text == "all":
        return None
    if text == EACH:
        return EACH
    if text.isdecimal():
        return int(text)
    raise InputError(f"{arg}: got {text!r}, expected last, all, each or a position index", arg=arg)


def split_units(text: str | None) -> list[str]:
    """Comma-separated unit strings (empty for None)."""
    return [u.strip() for u in text.split(",") if u.strip()] if text else []


def check_components(groups: str, units: list[str]) -> None:
    """The component groups and unit strings, checked (syntax only: no model needed)."""
    from lmscope.causal.components import standard_components

    standard_components(1, 1, groups, neurons=units)


def model_components(model: Any, groups: str, position: int | str | None, units: list[str],
                     texts: list[str] | None = None, allow_mismatch: bool = False) -> list[Any]:
    """The standard components of `model` at `position`; EACH: at every position up to the shortest of `texts`.

    `units` may name dictionary features (`dict:<path>:i`): their dictionaries are loaded (provenance checked)
    and attached first. Every unit's hook point is checked against the model before any work."""
    from lmscope.causal.components import standard_components
    from lmscope.dictionary.attach import attach_dictionaries
    from lmscope.model.units import Unit

    if units:
        attach_dictionaries(model, units, allow_mismatch=allow_mismatch)
        model.check_names(list(dict.fromkeys(Unit.parse(u).hook for u in units)))
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not isinstance(position, str):  # not EACH
        return standard_components(n_layers, n_heads, groups, position=position, neurons=units)
    n = int(model.to_tokens(texts or []).lengths.min())
    return [c for p in range(n) for c in standard_components(
        n_layers, n_heads, groups, position=p, neurons=[f"{u.split('@')[0]}@{p}" for u in units])]
