"""JSON helpers for the report: plain-data conversion and script-safe embedding.

Analyses hand the report numpy arrays, numpy scalars, tuples and paths; `result.json` must be strict
JSON (no NaN), and JSON embedded in a `<script>` element must never be able to close that element.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def to_list(values: Any) -> list[Any]:
    """Return `values` (list, tuple, numpy array or torch tensor) as a nested Python list."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        return json_safe(values.tolist())
    return json_safe(list(values))


def json_safe(obj: Any) -> Any:
    """Convert `obj` into plain JSON data; non-finite floats become None so the output is strict JSON."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, Mapping):
        return {str(key): json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((json_safe(value) for value in obj), key=repr)
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return json_safe(obj.detach().cpu().tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(dataclasses.asdict(obj))
    if hasattr(obj, "to_dict"):
        return json_safe(obj.to_dict())
    raise TypeError(f"cannot put a {type(obj).__name__} into result.json: {obj!r:.80}")


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Serialise `obj` as strict JSON after `json_safe`."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def script_json(obj: Any) -> str:
    """Serialise `obj` for a `<script type="application/json">` element.

    `<`, `>` and `&` become unicode escapes, so `</script>` or `<!--` in the data stays inert; the result
    is still valid JSON that `JSON.parse` reads back unchanged.
    """
    text = dumps(obj)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
