"""`lmscope report DIR...`: one HTML report rebuilt from saved result directories.

Each directory's `result.json` is read with `lmscope.results.read_result` (untrusted: schema, kind, version) and
drawn by the section function of its kind from `report/*_sections.py`, so a page rebuilt from saved results shows
the numbers the files hold. A kind with no section (or a whole saved report) is refused in one line naming the
directory, before anything is drawn.

    html = rebuild_report(["runs/ranking", "runs/mediation"]).render_html()
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmscope.errors import InputError
from lmscope.report.autointerp_sections import autointerp_section
from lmscope.report.blocks import Text
from lmscope.report.causal_sections import mediation_section, patching_section
from lmscope.report.circuit_sections import circuit_section
from lmscope.report.dictionary_sections import metrics_section, spliced_section, stack_section
from lmscope.report.heads_sections import (
    arithmetic_section,
    head_detectors_section,
    mod10_section,
    succession_section,
    wild_section,
)
from lmscope.report.neuron_sections import ablation_section, evaluation_section, ranking_section, selectivity_section
from lmscope.report.report import Report, Section
from lmscope.report.whitebox_sections import comparison_section
from lmscope.results import read_result, result_path


def circuit_layers(result: Mapping[str, Any]) -> int:
    """The model's layer count as a circuit's file shows it: one past the highest layer of any node or of any
    layer traced without a transcoder (the graph is drawn by layer, the target above the last)."""
    layers = [n["layer"] for n in result["graph"]["nodes"] if n["kind"] not in ("target", "target_bias")]
    layers += list(result.get("options", {}).get("layers_without_transcoder") or [])
    return max([int(x) for x in layers if x is not None] + [-1]) + 1


def _meta(result: Mapping[str, Any], key: str, default: str) -> str:
    return str((result.get("meta") or {}).get(key) or default)


SECTIONS: dict[str, Callable[[Mapping[str, Any]], Section]] = {
    "accuracy_at_k": evaluation_section,
    "activation_patching": lambda r: patching_section(r, model_name=_meta(r, "model", "the model")),
    "autointerp": autointerp_section,
    "circuit": lambda r: circuit_section(r, circuit_layers(r)),
    "dictionary_metrics": metrics_section,
    "dictionary_stack": stack_section,
    "head_detectors": head_detectors_section,
    "heads_in_the_wild": wild_section,
    "mediation": lambda r: mediation_section(r, model_name=_meta(r, "model", "the model"),
                                             treatment=_meta(r, "treatment", "the treatment"),
                                             confounder=_meta(r, "confounder", "the confounder")),
    "mod10_features": mod10_section,
    "neuron_ablation": ablation_section,
    "neuron_evaluation": evaluation_section,
    "neuron_ranking": ranking_section,
    "selectivity": selectivity_section,
    "spliced_metrics": spliced_section,
    "succession": succession_section,
    "vector_arithmetic": arithmetic_section,
    "whitebox_comparison": comparison_section,
}
"""The section function of every kind `lmscope report` draws, from the result's dict."""


def load_results(dirs: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, dict[str, Any]]]:
    """Every directory's (or file's) checked result, in order; a kind with no section is refused naming it."""
    if not dirs:
        raise InputError("DIR: name at least one result directory (one that holds a result.json)")
    out = []
    for d in dirs:
        result = read_result(d)
        kind = result["kind"]
        if kind == "report":
            raise InputError(f"{d}: holds a whole report (its report.html is beside it); lmscope report draws "
                             "the results of single analyses")
        if kind not in SECTIONS:
            raise InputError(f"{d}: a {kind!r} result has no report section; lmscope report draws "
                             f"{', '.join(sorted(SECTIONS))}")
        out.append((result_path(d), result))
    return out


def rebuild_report(dirs: Sequence[str | os.PathLike[str]], *, title: str = "lmscope report") -> Report:
    """One report with a section per saved result, in the order given (repeated kinds get keys `kind-2`, ...)."""
    loaded = load_results(dirs)
    report = Report(title, meta={"results": [str(path) for path, _ in loaded]})
    seen: dict[str, int] = {}
    for path, result in loaded:
        kind = result["kind"]
        try:
            section = SECTIONS[kind](result)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as err:
            raise InputError(f"{path}: not a readable {kind.replace('_', ' ')} result ({err!r:.120})") from None
        seen[kind] = seen.get(kind, 0) + 1
        key = section.key if seen[kind] == 1 else f"{section.key}-{seen[kind]}"
        version = result.get("version") or "an earlier version"
        source = Text(f"From `{path}` ({kind}, lmscope {version}).")
        report.add(dataclasses.replace(section, key=key, blocks=[source, *section.blocks]))
    return report
