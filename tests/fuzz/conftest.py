"""The fuzz suite's fixed hypothesis profile and shared strategies.

Every parser and reader lmscope applies to a user's file is fuzzed here with one property: it returns a valid
value or raises `InputError`, never another exception (the CLI turns InputError into one line and exit 2; any
other exception is a traceback and exit 1). Round trips (write, then read) must give back what was written.

The profile is deterministic (`derandomize=True`: the examples are a function of the test's source, so a run
passes or fails the same way everywhere) and has no example database and no deadline (the machine is shared;
timing is never asserted). `max_examples` is set per test, sized so the whole suite stays well under 30 s.
Strategies and the property check live in `fuzz/fuzz_helpers.py`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("lmscope-fuzz", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("lmscope-fuzz")

@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One directory per test module; fuzz examples write their files here (hypothesis reruns a test function
    many times, so a function-scoped tmp_path would be shared anyway)."""
    with tempfile.TemporaryDirectory(prefix="lmscope-fuzz-") as d:
        yield Path(d)
