"""Merging found paths into one attribution graph, pruned by contribution, with nothing hidden.

The search's paths form a tree of prefixes (target ← n1 ← n2 ...). A prefix is kept when its |value| is
at least `threshold × |target value|`; under every expanded prefix the graph keeps the children that lie
on a found path, plus every leaf (embedding, error, biases) above the threshold, and one `rest` node per
parent holds everything else (children the search did not follow, pruned ones, rounding). So at every
expanded node, the in-edges sum to the node's `traced` value (the part of its value reached through
expanded prefixes; all of it unless the search stopped at some of them), at the target to what the model computed
(up to `ROUNDING × |target|`: float32 rounding is neither drawn as a leaf nor as a rest).

Merging: a node's value is the sum of its kept prefixes' values (its total contribution to the target
through the graph); an edge `child → parent` carries the sum over the kept prefixes that end in
`..., parent, child`. JSON: `{"target", "target_value", "threshold", "nodes": [...], "edges": [...],
"dictionaries"}`.

Graph nodes are units (`lmscope.model.units`): each node records its `unit` string (`Node.unit`; features need
the name their layer's transcoder is attached under, `dictionaries`), and `graph.units()` hands them to the
interventions and analyses that take units. Graphs saved before units load too (their units are derived from
the nodes' fields).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from lmscope.circuits.paths import PathSearch, Prefix
from lmscope.circuits.trace import EXPANDABLE, Node, node_unit
from lmscope.errors import InputError, bad_argument
from lmscope.fileio import atomic_write_json
from lmscope.model.units import UnitSet

ROUNDING = 1e-6  # terms and rests below this fraction of |target| are float32 rounding, not drawn


@dataclass
class CircuitGraph:
    """Nodes (`id -> {kind, layer, index, pos, src, value, traced, expanded, label, unit}`) and edges
    (`(child id, parent id) -> summed contribution`) of a pruned attribution graph; `dictionaries` maps a layer
    to the name its transcoder's features are units under (`dict:<name>:<feature>`)."""

    target: str
    target_value: float
    threshold: float
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[tuple[str, str], float] = field(default_factory=dict)
    dictionaries: dict[int, str] = field(default_factory=dict)

    def units(self, kinds: Sequence[str] = ("feature", "head")) -> UnitSet:
        """The units of the graph's nodes of these kinds (feature, head, mlp, embed), in node order; e.g.
        `ZeroAblation(graph.units(["feature"]))` on a model with the transcoders attached under `dictionaries`."""
        units = []
        for n in self.nodes.values():
            if n["kind"] not in kinds:
                continue
            name = self.dictionaries.get(int(n["layer"]))
            if n["kind"] == "feature" and name is None:
                raise InputError(f"graph: feature node {n['id']} has no dictionary name for layer {n['layer']}; "
                                 "build the graph with dictionaries={layer: name} (the name its transcoder is "
                                 "attached under)")
            unit = node_unit(n["kind"], int(n["layer"]), int(n["index"]), int(n["pos"]), name)
            if unit is not None:
                units.append(unit)
        return UnitSet(units)

    def features(self) -> list[tuple[int, int, int]]:
        """`(layer, feature, pos)` of every transcoder feature in the graph."""
        return sorted((n["layer"], n["index"], n["pos"]) for n in self.nodes.values() if n["kind"] == "feature")

    def in_edges(self, node_id: str) -> dict[str, float]:
        """The edges into `node_id`: `{child id: value}`."""
        return {c: v for (c, p), v in self.edges.items() if p == node_id}

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "target_value": self.target_value, "threshold": self.threshold,
                "nodes": list(self.nodes.values()),
                "edges": [{"source": c, "target": p, "value": v} for (c, p), v in self.edges.items()],
                "dictionaries": {str(layer): name for layer, name in self.dictionaries.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CircuitGraph:
        try:
            return cls(d["target"], float(d["target_value"]), float(d["threshold"]),
                       {n["id"]: dict(n) for n in d["nodes"]},
                       {(e["source"], e["target"]): float(e["value"]) for e in d["edges"]},
                       {int(k): str(v) for k, v in (d.get("dictionaries") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"graph: not a circuit graph ({err})") from None

    def save(self, directory: str | FsPath, *, overwrite: bool = False) -> FsPath:
        """Write `graph.json` into `directory`."""
        return atomic_write_json(FsPath(directory) / "graph.json", self.to_dict(), overwrite=overwrite)


def node_label(node: Node, tokens: Sequence[str]) -> str:
    """A short human label: `L1 f12 ' 17'`, `head 2.3 ' 17'←'from'`, `error L0 ' 17'`."""
    def tok(p: int) -> str:
        return repr(tokens[p]) if 0 <= p < len(tokens) else str(p)

    where = tok(node.pos)
    special = {"feature": f"L{node.layer} f{node.index} {where}",
               "head": f"head {node.layer}.{node.index} {where}←{tok(node.src)}",
               "enc_bias": f"bias of L{node.layer} f{node.index} {where}", "rest": f"rest of {node.of}"}
    if node.kind in special:
        return special[node.kind]
    return f"{node.kind} L{node.layer} {where}" if node.layer >= 0 else f"{node.kind} {where}"


def build_graph(search: PathSearch, tokens: Sequence[str], *, threshold: float = 0.0,
                activations: dict[tuple[int, int, int], float] | None = None,
                dictionaries: Mapping[int, str] | None = None) -> CircuitGraph:
    """The pruned graph of `search` (see the module docstring); `activations` adds `activation` to features;
    `dictionaries` names each layer's transcoder, so that feature nodes are `dict:<name>:<feature>@pos` units."""
    if threshold < 0:
        raise bad_argument("threshold", "a non-negative fraction of the target", threshold)
    scale = abs(search.root_value) or 1.0
    cut, tol = threshold * scale, ROUNDING * scale
    on_path: dict[Prefix, set[Node]] = defaultdict(set)
    for path in search.paths:
        on_path[path.nodes[:-1]].add(path.nodes[-1])
    names = {int(layer): str(name) for layer, name in (dictionaries or {}).items()}
    graph = CircuitGraph(search.root.id, search.root_value, threshold, dictionaries=names)
    acts = activations or {}

    def add_node(node: Node, value: float, expanded: bool) -> None:
        if node.id not in graph.nodes:
            unit = node.unit(names.get(node.layer))
            graph.nodes[node.id] = {**node.to_dict(), "value": 0.0, "traced": 0.0, "expanded": False,
                                    "label": node_label(node, tokens), "unit": None if unit is None else str(unit)}
        entry = graph.nodes[node.id]
        entry["value"] += value
        if expanded:
            entry["traced"] += value
            entry["expanded"] = True
        if node.kind == "feature":
            entry["activation"] = acts.get((node.layer, node.index, node.pos))

    def add_edge(child: str, parent: str, value: float) -> None:
        graph.edges[(child, parent)] = graph.edges.get((child, parent), 0.0) + value

    stack: list[tuple[Prefix, float]] = [((search.root,), search.root_value)]
    while stack:
        prefix, value = stack.pop()
        kids = search.children.get(prefix)
        add_node(prefix[-1], value, kids is not None)
        if len(prefix) > 1:
            add_edge(prefix[-1].id, prefix[-2].id, value)
        if kids is None:
            continue
        rest = value - sum(v for _, v in kids)  # rounding, or the model-vs-trace remainder at the target
        for node, v in kids:
            wanted = node in on_path[prefix] or node.kind not in EXPANDABLE
            if wanted and abs(v) >= cut and abs(v) > tol:
                stack.append(((*prefix, node), v))
            else:
                rest += v
        if abs(rest) > tol:
            parent = prefix[-1]
            rest_node = Node("rest", parent.layer, parent.index, parent.pos, parent.src, of=parent.id)
            add_node(rest_node, rest, False)
            add_edge(rest_node.id, parent.id, rest)
    return graph
