"""Automated neuron and feature interpretability: explain, simulate, score (Bills et al. 2023), offline.

`score_store(store)` explains every neuron of an activation store (or every feature of a dictionary
applied to it) from its top-activating and quantile-binned records, simulates its activations on held-out
top and random records, and reports the correlation scores (top-and-random, random-only), detection
accuracy and structural metrics (sparsity, dead fraction, kurtosis, IoU with known labels), with bootstrap
CIs per hook point. The default explainer and simulator need no LLM; `LLMExplainer`/`LLMSimulator` plug in
an OpenAI-compatible endpoint, and `HFExplainer`/`HFSimulator` a local HF model (batched cached generation, the
all-at-once simulator: `lmscope.autointerp.local`), scored beside the offline pair. `score_texts(model, texts)`
does the same on the user's own text, with one record per document and one activation per token
(attention-sink positions left out).
"""

from lmscope.autointerp.explain import Explainer, Explanation, OfflineExplainer, OfflineSimulator, Simulator
from lmscope.autointerp.llm import HFClient, LLMExplainer, LLMSimulator, OpenAIClient
from lmscope.autointerp.local import HFExplainer, HFSimulator, LocalLM
from lmscope.autointerp.records import NeuronRecords, Record, RecordConfig, neuron_records
from lmscope.autointerp.result import AutointerpResult, pick_units, score_store, score_texts, summarize
from lmscope.autointerp.scoring import NeuronScore, correlation, score_activations, score_neuron
from lmscope.autointerp.stats import bootstrap_mean, relative_improvement
from lmscope.autointerp.structural import RowLabels, corpus_row_labels, structural_metrics, synthetic_row_labels
from lmscope.autointerp.text import TextActivations, text_activations, token_string

__all__ = [
    "AutointerpResult",
    "Explainer",
    "Explanation",
    "HFClient",
    "HFExplainer",
    "HFSimulator",
    "LLMExplainer",
    "LLMSimulator",
    "LocalLM",
    "NeuronRecords",
    "NeuronScore",
    "OfflineExplainer",
    "OfflineSimulator",
    "OpenAIClient",
    "Record",
    "RecordConfig",
    "RowLabels",
    "Simulator",
    "TextActivations",
    "bootstrap_mean",
    "corpus_row_labels",
    "correlation",
    "neuron_records",
    "pick_units",
    "relative_improvement",
    "score_activations",
    "score_neuron",
    "score_store",
    "score_texts",
    "structural_metrics",
    "summarize",
    "synthetic_row_labels",
    "text_activations",
    "token_string",
]
