"""Activation stores: streaming, sharded, resumable extraction of hook-point activations, word-aligned."""

from lmscope.activations.corpus import read_sentences
from lmscope.activations.extract import ExtractConfig, extract, weights_sha256
from lmscope.activations.store import ActivationStore, Shard

__all__ = ["ActivationStore", "ExtractConfig", "Shard", "extract", "read_sentences", "weights_sha256"]
