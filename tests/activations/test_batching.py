"""Length-bucketed batches: within the token budget, little padding, every sentence exactly once."""

from __future__ import annotations

import random

from lmscope.activations.collect import MAX_PADDING, _batches


def test_batches_cover_all_with_little_padding() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 40) for _ in range(500)]
    batches = _batches(lengths, 1024)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        width = max(lengths[i] for i in b)
        padded = width * len(b)
        assert padded <= 1024 or len(b) == 1
        assert padded - sum(lengths[i] for i in b) <= MAX_PADDING * padded
    assert len(batches) < 100  # still real batches, not one sentence each


def test_single_long_sentence_gets_its_own_batch() -> None:
    assert _batches([5, 2000, 5], 1024) == [[0, 2], [1]]
