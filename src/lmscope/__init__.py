"""lmscope: neuron-, feature- and circuit-level interpretability for Hugging Face causal LMs."""
