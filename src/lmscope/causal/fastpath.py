"""Moved to `lmscope.model.window` (running a window of layers and positions is a capability of the spine).

The names stay importable from here for callers that have not switched yet (`causal/attribution.py` imports
`last_logits_only`); new code imports them from `lmscope.model.window`.
"""

from lmscope.model.window import (
    KV,
    Window,
    base_run,
    cache_keyword,
    fits_window,
    last_logits_only,
    returned_cache,
    sliding_window,
    window,
)

__all__ = ["KV", "Window", "base_run", "cache_keyword", "fits_window", "last_logits_only", "returned_cache",
           "sliding_window", "window"]
