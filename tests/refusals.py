"""One helper for tests of refusals: the call raises one InputError, matching `words`, on one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lmscope.errors import InputError


def refused(call: Callable[[], Any], words: str) -> str:
    """The message of the InputError `call()` raises (matched on `words`), asserted to be one line."""
    with pytest.raises(InputError, match=words) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    return message
