"""Greedy beam search for the top computational paths back from a target (Dunefsky et al. 2024, App. "paths").

A path is a chain `target ← n1 ← n2 ← ...`; its value is the last node's contribution to the target along
that chain (activation × the product of the input-invariant connections, frozen norms and attention
weights on the way), so the values of a node's children sum to the node's own value. Each iteration
expands every path of the frontier into its `branches` largest children (by |value|) and keeps the
`beam` largest of all candidates; leaves (error, bias, embedding) compete for places like features and
heads, so a large error term shows up as a path instead of being hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmscope.circuits.trace import EXPANDABLE, CircuitTrace, Node, Probe
from lmscope.errors import bad_argument

Prefix = tuple[Node, ...]


@dataclass(frozen=True)
class Path:
    """`nodes` from the target back; `value` is the last node's contribution to the target through them."""

    nodes: Prefix
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.id for n in self.nodes], "value": self.value}


@dataclass
class PathSearch:
    """The search's output: `paths` (every kept path, by iteration then |value|) and, for every expanded
    prefix, all of its children with their values (what the graph needs to show what it leaves out)."""

    root: Node
    root_value: float
    paths: list[Path]
    children: dict[Prefix, list[tuple[Node, float]]] = field(default_factory=dict)

    def top(self, k: int = 10) -> list[Path]:
        """The k paths with the largest |value|."""
        return sorted(self.paths, key=lambda p: -abs(p.value))[:k]

    def value(self, prefix: Prefix) -> float | None:
        """The value of a prefix that the search saw (a kept path or an expanded node's child), else None."""
        if prefix == (self.root,):
            return self.root_value
        parent = self.children.get(prefix[:-1])
        if parent is None:
            return None
        return next((v for n, v in parent if n == prefix[-1]), None)


def find_paths(trace: CircuitTrace, root: Probe, *, n_iters: int = 3, branches: int = 5, beam: int | None = None,
               min_abs: float = 0.0, progress: Callable[[int, int], None] | None = None,
               root_value: float | None = None) -> PathSearch:
    """Beam search back from `root` for `n_iters` steps (see the module docstring).

    `min_abs`: children with |value| <= min_abs are never followed (0 drops exact zeros only).
    `root_value`: the target's value as the model computed it (default: from the trace).
    """
    for name, v in (("n_iters", n_iters), ("branches", branches), ("beam", beam)):
        if v is not None and v < 1:
            raise bad_argument(name, "a positive integer", v)
    beam = beam or branches
    root_node = Node("target", pos=root.pos)
    value = trace.value(root) if root_value is None else root_value
    search = PathSearch(root_node, value, [])
    frontier: list[tuple[Prefix, Probe]] = [((root_node,), root)]
    for it in range(n_iters):
        candidates: list[tuple[Prefix, float, Probe]] = []
        for prefix, probe in frontier:
            kids = trace.children(probe)
            search.children[prefix] = kids
            ranked = sorted((kv for kv in kids if abs(kv[1]) > min_abs), key=lambda kv: -abs(kv[1]))[:branches]
            candidates += [((*prefix, node), v, probe) for node, v in ranked]
        candidates.sort(key=lambda c: -abs(c[1]))
        frontier = []
        for prefix, v, parent in candidates[:beam]:
            search.paths.append(Path(prefix, v))
            if prefix[-1].kind in EXPANDABLE and it + 1 < n_iters:
                frontier.append((prefix, trace.expand(prefix[-1], parent)))
        if progress is not None:
            progress(it + 1, n_iters)
        if not frontier:
            break
    return search
