"""Sparse dictionaries: SAEs and transcoders, their training, metrics and SAELens-layout files."""

from lmscope.dictionary.attach import attach_dictionaries
from lmscope.dictionary.buffer import ActivationBuffer
from lmscope.dictionary.estimators import SAE, Transcoder
from lmscope.dictionary.io import load_dictionary, save_dictionary
from lmscope.dictionary.metrics import DictionaryMetrics, evaluate, feature_density, fvu, l0
from lmscope.dictionary.modules import DictConfig, Dictionary
from lmscope.dictionary.splice import Splice, SplicedMetrics, feature_activations, site_mean, spliced_metrics
from lmscope.dictionary.train import RunConfig, TrainConfig, latest_checkpoint

__all__ = [
    "SAE",
    "ActivationBuffer",
    "DictConfig",
    "Dictionary",
    "DictionaryMetrics",
    "RunConfig",
    "Splice",
    "SplicedMetrics",
    "TrainConfig",
    "Transcoder",
    "attach_dictionaries",
    "evaluate",
    "feature_activations",
    "feature_density",
    "fvu",
    "l0",
    "latest_checkpoint",
    "load_dictionary",
    "save_dictionary",
    "site_mean",
    "spliced_metrics",
]
