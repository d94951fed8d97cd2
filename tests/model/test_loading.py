"""Loading and test isolation: the suite runs against its own LMSCOPE_HOME, and the packaged zoo is still found."""

from __future__ import annotations

import os
from pathlib import Path

from lmscope.model import zoo


def test_suite_home_is_isolated_and_packaged_zoo_is_found(isolated_lmscope_home: str) -> None:
    assert os.environ["LMSCOPE_HOME"] == isolated_lmscope_home
    assert zoo.home() == Path(isolated_lmscope_home)
    assert zoo.home() != Path("~/.cache/lmscope").expanduser()
    assert not (zoo.home() / "zoo" / "gpt2-tiny").exists()  # nothing cached in the test home
    assert zoo.locate("gpt2-tiny") == zoo.PACKAGED / "gpt2-tiny"  # the shipped weights, not a training run
