"""Feature circuits through transcoders (Dunefsky, Chlenski, Nanda 2024): attributions, paths, pruned graphs.

With LayerNorm scales and attention patterns frozen from one forward pass, a target (a logit difference,
or a later feature's pre-activation) is an exact sum of terms: earlier transcoder features
(activation × decoder · target), heads at each source position (pattern × the OV map pulled back onto
the target), embeddings, transcoder errors and biases. Chaining these gives paths and graphs.

Every graph is scored (`faithfulness`): circuit-tracer's replacement and completeness scores, and the fraction of
the target its features recover alone, live and in the attribution frame, on its prompt and on held-out prompts
of the same task (`heldout`: from a file, or made from the prompt by substitution).
"""

from lmscope.circuits.analysis import Attribution, CircuitResult, attribute, root_probe, target_value, trace_circuit
from lmscope.circuits.check import Recovery, recovery
from lmscope.circuits.faithfulness import GraphScores, HeldOut, HeldoutCase, graph_scores, heldout_recovery
from lmscope.circuits.graph import CircuitGraph, build_graph
from lmscope.circuits.invariant import (
    connection,
    connections,
    de_embedding_scores,
    logit_scores,
    ov_de_embedding,
    top_connections,
)
from lmscope.circuits.paths import Path, PathSearch, find_paths
from lmscope.circuits.targets import Target, greater_than_target, parse_target
from lmscope.circuits.trace import CircuitTrace, Node, Probe

__all__ = [
    "Attribution",
    "CircuitGraph",
    "CircuitResult",
    "CircuitTrace",
    "GraphScores",
    "HeldOut",
    "HeldoutCase",
    "Node",
    "Path",
    "PathSearch",
    "Probe",
    "Recovery",
    "Target",
    "attribute",
    "build_graph",
    "connection",
    "connections",
    "de_embedding_scores",
    "find_paths",
    "graph_scores",
    "greater_than_target",
    "heldout_recovery",
    "logit_scores",
    "ov_de_embedding",
    "parse_target",
    "recovery",
    "root_probe",
    "target_value",
    "top_connections",
    "trace_circuit",
]
