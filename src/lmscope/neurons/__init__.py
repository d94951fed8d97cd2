"""Neuron analysis as in NeuroX: rankers with scikit-learn conventions and array-level evaluation.

Rankers (`fit(X, y)` on activations `Float[n_samples, n_neurons]` and class ids `Int[n_samples]`):
`LinearProbe` (elastic-net LCA), `Probeless` (Antverg & Belinkov), `IoU` (Mu & Andreas), `GaussianProbe`
(Torroba Hennigen et al.) and `RandomRanking`. Evaluation: `accuracy_at_k` (top / random / bottom k) and
`selectivity` (task minus control accuracy).
"""

from lmscope.neurons.evaluation import AccuracyAtK, Selectivity, accuracy_at_k, selectivity
from lmscope.neurons.gaussian import GaussianProbe
from lmscope.neurons.probe import LinearProbe, top_neurons_by_mass
from lmscope.neurons.rankers import IoU, Probeless, RandomRanking, Ranker

__all__ = [
    "AccuracyAtK",
    "GaussianProbe",
    "IoU",
    "LinearProbe",
    "Probeless",
    "RandomRanking",
    "Ranker",
    "Selectivity",
    "accuracy_at_k",
    "selectivity",
    "top_neurons_by_mass",
]
