"""The circuit of one prompt and target: direct attributions, top paths, the pruned graph, and its check.

    tcs = transcoder_stack(model)                       # {layer: transcoder}, trained once and cached
    result = trace_circuit(model, tcs, "from the year 1732 to the year 17", parse_target("logit:40-20", model))
    result.graph.to_dict(); result.recovery.recovered; result.save("out/")
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, ClassVar

from lmscope.circuits.check import Recovery, recovery
from lmscope.circuits.faithfulness import GraphScores, HeldOut, HeldoutCase, graph_scores, heldout_recovery, under_half
from lmscope.circuits.graph import CircuitGraph, build_graph, node_label
from lmscope.circuits.invariant import feature_readout
from lmscope.circuits.paths import Path, PathSearch, find_paths
from lmscope.circuits.targets import Target, check_feature, logit_metric
from lmscope.circuits.trace import CircuitTrace, Node, Probe
from lmscope.dictionary.modules import Dictionary
from lmscope.fileio import check_writable
from lmscope.model.hooked import HookedModel
from lmscope.results import HTML_NAME, RESULT_NAME, ResultMixin, write_result


@dataclass
class Attribution:
    """Every direct term of the target's value (features of earlier layers at its position, heads × source
    positions, embedding, errors, biases); `remainder` = value − Σ terms (rounding only)."""

    target: Target
    pos: int
    value: float
    terms: list[tuple[Node, float]]
    tokens: list[str]

    @property
    def remainder(self) -> float:
        return self.value - sum(v for _, v in self.terms)

    def by_kind(self) -> dict[str, float]:
        """The terms summed per node kind (feature, head, embed, error, ...)."""
        out: dict[str, float] = defaultdict(float)
        for node, v in self.terms:
            out[node.kind] += v
        return dict(out)

    def top(self, k: int = 20) -> list[tuple[Node, float]]:
        return sorted(self.terms, key=lambda t: -abs(t[1]))[:k]

    def to_dict(self, k: int = 50) -> dict[str, Any]:
        return {"target": self.target.to_dict(), "pos": self.pos, "value": self.value, "remainder": self.remainder,
                "by_kind": self.by_kind(), "n_terms": len(self.terms),
                "top": [{**n.to_dict(), "label": node_label(n, self.tokens), "value": v} for n, v in self.top(k)]}


def root_probe(trace: CircuitTrace, target: Target) -> tuple[Probe, int]:
    """The target's probe in `trace` and its position."""
    pos = target.position(trace.n_pos)
    if target.kind == "feature":
        tc = trace.transcoders.get(target.layer)
        check_feature(target, None if tc is None else tc.cfg.d_sae)
        return trace.feature_probe(target.layer, target.feature, pos, bias_node=Node("target_bias", pos=pos)), pos
    return trace.logit_probe(target.direction(trace.model), pos), pos


def target_value(trace: CircuitTrace, target: Target) -> float:
    """The target's value as the model computed it (logits, or the transcoder's pre-activation)."""
    pos = target.position(trace.n_pos)
    if target.kind == "feature":
        return float(trace.pre[target.layer][pos, target.feature])
    return float(logit_metric(trace.logits, target, pos))


def attribute(trace: CircuitTrace, target: Target) -> Attribution:
    """The direct attributions of `target` (item 1 of the method; one level of the path search)."""
    probe, pos = root_probe(trace, target)
    return Attribution(target, pos, target_value(trace, target), trace.children(probe), trace.str_tokens())


def layers_without_transcoder(model: HookedModel, transcoders: Mapping[int, Dictionary], target: Target) -> list[int]:
    """The MLP layers the target reads (every layer for a logit; those before its own for a feature target)
    that have no transcoder: each is one opaque `mlp` leaf in the graph."""
    reach = target.layer if target.kind == "feature" else model.cfg.n_layers
    return [layer for layer in range(reach) if layer not in transcoders]


def describe_missing(missing: list[int], n_layers: int) -> str | None:
    """One line naming the layers traced without a transcoder, or None when every layer has one."""
    if not missing:
        return None
    if len(missing) == n_layers:
        return "no layer has a transcoder: every MLP is one opaque 'mlp' leaf, so the graph has no features"
    runs: list[list[int]] = []
    for layer in missing:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    names = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
    return (f"no transcoder for layer{'s' if len(missing) > 1 else ''} {names} of {n_layers}: "
            f"{'each is' if len(missing) > 1 else 'it is'} one opaque 'mlp' leaf, with no features")


@dataclass
class CircuitResult(ResultMixin):
    """Everything `trace_circuit` found for one prompt and target. Its result.json keeps the top attribution terms
    and paths, not the whole trace, so it is read back with `read_result` (a dict), not rebuilt."""

    kind: ClassVar[str] = "circuit"

    model: str
    prompt: str
    tokens: list[str]
    attribution: Attribution
    search: PathSearch
    graph: CircuitGraph
    recovery: Recovery | None
    seconds: dict[str, float]
    options: dict[str, Any]
    features: list[dict[str, Any]]  # the graph's top features with their de-embedding tokens
    scores: GraphScores | None = None  # replacement / completeness of the graph
    heldout: HeldOut | None = None  # the graph's features on held-out prompts of the task

    def labels(self) -> list[str]:
        """`UNDER_HALF` labels: the graph recovers under half of the target on its own prompt or held out."""
        rec = self.recovery
        own = None if rec is None else under_half(rec.recovered, rec.recovered_frozen, "its own prompt")
        held = None if self.heldout is None else self.heldout.verdict()
        return [x for x in (own, held) if x is not None]

    def top_paths(self, k: int = 10) -> list[Path]:
        return self.search.top(k)

    def path_label(self, path: Path) -> str:
        return " ← ".join(node_label(n, self.tokens) if n.kind != "target" else "target" for n in path.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "prompt": self.prompt, "tokens": self.tokens,
                "target": self.attribution.target.to_dict(), "target_value": self.attribution.value,
                "options": self.options, "attribution": self.attribution.to_dict(),
                "paths": [{**p.to_dict(), "label": self.path_label(p)} for p in self.top_paths(len(self.search.paths))],
                "graph": self.graph.to_dict(), "recovery": None if self.recovery is None else self.recovery.to_dict(),
                "features": self.features, "seconds": self.seconds,
                "scores": None if self.scores is None else self.scores.to_dict(),
                "heldout": None if self.heldout is None else self.heldout.to_dict(), "labels": self.labels()}

    def save(self, directory: str | FsPath, *, overwrite: bool = False, html: str | None = None) -> FsPath:
        """Write `result.json` (everything), `graph.json` (the graph alone) and, given the page, `report.html` into
        `directory`; all are checked before any is written."""
        out = FsPath(directory)
        for name in (RESULT_NAME, "graph.json", *((HTML_NAME,) if html is not None else ())):
            check_writable(out / name, overwrite=overwrite)
        self.graph.save(out, overwrite=overwrite)
        return write_result(out, self, html=html, overwrite=overwrite)["json"]


def trace_circuit(model: HookedModel, transcoders: Mapping[int, Dictionary], prompt: str, target: Target, *,
                  n_iters: int = 3, branches: int = 5, beam: int | None = None, threshold: float = 0.01,
                  check: bool = True, heldout: Sequence[HeldoutCase] | None = None, heldout_source: str = "",
                  heldout_skipped: Sequence[str] = (), dictionaries: Mapping[int, str] | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> CircuitResult:
    """Trace `prompt`, attribute `target`, search paths, build the graph pruned at `threshold × |target|`, score
    it (replacement, completeness), and (if `check`) measure how much of the target the graph's features alone
    recover, on `prompt` and on each `heldout` case (prompts of the task the search never saw; see
    `lmscope.circuits.faithfulness`). `dictionaries` names each layer's transcoder (its directory, as attached to
    the model), so that the graph's feature nodes are `dict:<name>:<feature>@pos` units (`graph.units()`).

    Layers without a transcoder are traced as one `mlp` leaf each (no features below them); they are listed in
    `options["layers_without_transcoder"]` (those the target reads: all layers for a logit, the layers before
    a feature target's own). `progress(stage, i, n)` hears "trace", "path search", "check" and "held-out"."""
    report = progress or (lambda stage, i, n: None)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    report("trace", 0, 1)
    trace = CircuitTrace(model, transcoders, prompt)
    attribution = attribute(trace, target)
    report("trace", 1, 1)
    t1 = time.perf_counter()
    probe, pos = root_probe(trace, target)
    search = find_paths(trace, probe, n_iters=n_iters, branches=branches, beam=beam, root_value=attribution.value,
                        progress=lambda i, n: report("path search", i, n))
    report("path search", n_iters, n_iters)  # also when the search ran out of nodes to expand early
    t2 = time.perf_counter()
    acts = {(layer, int(f), p): float(z[p, f]) for layer, z in trace.z.items() for p, f in z.nonzero().tolist()}
    graph = build_graph(search, attribution.tokens, threshold=threshold, activations=acts, dictionaries=dictionaries)
    t3 = time.perf_counter()
    times.update(trace=t1 - t0, search=t2 - t1, graph=t3 - t2, build=t3 - t0)
    scores = graph_scores(graph)
    t3 = time.perf_counter()
    times["scores"] = t3 - t0 - times["build"]
    if check:
        report("check", 0, 1)
    rec = recovery(model, transcoders, prompt, target, graph.features()) if check else None
    if check:
        report("check", 1, 1)
    t4 = time.perf_counter()
    times["check"] = t4 - t3
    held = None
    if heldout:
        report("held-out", 0, len(heldout))
        held = heldout_recovery(model, transcoders, graph.features(), pos, heldout, source=heldout_source,
                                skipped=heldout_skipped, progress=lambda i, n: report("held-out", i, n))
        times["heldout"] = time.perf_counter() - t4
    options = {"n_iters": n_iters, "branches": branches, "beam": beam or branches, "threshold": threshold,
               "pos": pos, "layers": sorted(transcoders),
               "layers_without_transcoder": layers_without_transcoder(model, transcoders, target)}
    features = feature_readout(model, transcoders, list(graph.nodes.values()))
    return CircuitResult(model.name, prompt, attribution.tokens, attribution, search, graph, rec, times, options,
                         features, scores, held)
