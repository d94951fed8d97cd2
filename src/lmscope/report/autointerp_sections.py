"""Report section for a saved autointerp result: the scores' means with their intervals, and the best-explained
units with their explanations (`AutointerpResult.to_dict()`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lmscope.report.blocks import KeyValues, Table, Text
from lmscope.report.report import Section

SHOWN_METRICS = ("top_and_random", "random_only", "detection", "best_iou")


def _mean(s: Mapping[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def autointerp_section(result: Mapping[str, Any], top: int = 8) -> Section:
    """Per metric the mean over units (95% bootstrap CI; undefined scores left out), and the `top` units by
    top-and-random correlation."""
    overall = result["summary"].get("all", {})
    units = [u for u in result["units"] if isinstance(u.get("top_and_random"), int | float)
             and math.isfinite(u["top_and_random"])]
    units.sort(key=lambda u: -u["top_and_random"])
    rows = [[u["unit"], (u.get("explanation") or {}).get("text", ""), u["top_and_random"], u.get("density")]
            for u in units[:top]]
    blocks = [
        Text(f"{len(result['units'])} units of `{result['model'] or 'the model'}` from `{result['source']}`, "
             f"explained by the {result['explainer']} explainer and scored by the {result['simulator']} simulator "
             "on held-out records: the correlation of simulated and true activations (Bills et al.)."),
        KeyValues({f"{m.replace('_', '-')} (mean, 95% CI)": _mean(overall.get(m)) for m in SHOWN_METRICS}),
        Table(["unit", "explanation", "top-and-random", "density"], rows, caption="Best-explained units"),
    ]
    return Section("autointerp", "Automated explanations and their scores", blocks,
                   {"summary": {m: overall.get(m) for m in SHOWN_METRICS}, "top_units": [r[0] for r in rows]})
