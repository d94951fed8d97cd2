"""JSON helpers for the report: strict serialisation and script-safe embedding.

Plain-data conversion (`json_safe`, `to_list`) lives in the results layer (`lmscope.results`); JSON embedded
in a `<script>` element must never be able to close that element.
"""

from __future__ import annotations

import json
from typing import Any

from lmscope.results import json_safe

__all__ = ["dumps", "script_json"]


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
