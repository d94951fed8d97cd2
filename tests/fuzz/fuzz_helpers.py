"""Strategies and the one property every fuzzed reader must have (see conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from lmscope.errors import InputError

# JSON values of any shape (the scalars JSON has, nested lists and objects)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(
    max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def valid_or_input_error(fn: Callable[[], Any]) -> tuple[bool, Any]:
    """`(True, value)` if `fn()` returned, `(False, error)` if it raised InputError (one line, names something);
    any other exception propagates and fails the test."""
    try:
        return True, fn()
    except InputError as err:
        msg = str(err)
        assert msg and "\n" not in msg.strip(), f"InputError message is not one line: {msg!r}"
        return False, err
