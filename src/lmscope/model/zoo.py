"""The model zoo: tiny models of each supported family, trained on lmscope's synthetic corpus.

`zoo:NAME` resolves, in order, to `$LMSCOPE_HOME/zoo/NAME` (default `~/.cache/lmscope`), then to the
weights shipped inside the package (skipped when `LMSCOPE_ZOO_PACKAGED=0`), and otherwise trains the
model into the cache (a few minutes on 2 cores). Training is deterministic from the spec's seed:
`lmscope zoo train NAME` reproduces the shipped weights' recipe. Every zoo directory is a standard HF
directory plus `zoo_card.json` (parameters, training curve, held-out loss vs a unigram baseline, ordinal
accuracy).

Zoo models are trained with a BOS (`<|endoftext|>`) before every document, so their tokenizer adds it:
`tokenizer(text)` is what the model sees (a `TemplateProcessing` post-processor in `tokenizer.json`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmscope.errors import InputError
from lmscope.model.adapters import hf_module
from lmscope.model.training import TrainConfig, TrainLog, heldout_loss, pack_tokens, train_causal_lm, unigram_loss

Progress = Callable[[int, int], None]
PACKAGED = Path(__file__).parent / "zoo_weights"
log = logging.getLogger(__name__)
CORPUS_SEED = 0
TRAIN_SAMPLES = 120_000
HELDOUT_SAMPLES = 4_000
STORAGE_DTYPE = torch.float16
"""Zoo weights are stored in half precision (they load as float32): the packaged zoo stays under 10 MB.
Training rounds the weights to it before the card is measured, so the card describes the stored model."""


@dataclass(frozen=True)
class ZooSpec:
    """How one zoo model is built and trained."""

    name: str
    family: str
    arch: dict[str, Any]
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""


SPECS: dict[str, ZooSpec] = {
    spec.name: spec
    for spec in (
        ZooSpec("gpt2-tiny", "gpt2", {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_inner": 512,
                                      "n_positions": 128, "activation_function": "gelu_new"},
                TrainConfig(steps=3000, batch_size=32, seq_len=64, lr=3e-3, seed=0),
                "GPT-2 architecture, 4 layers, d_model 128, 4 heads, GELU MLP of 512"),
        ZooSpec("neox-tiny", "gpt_neox", {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                                          "intermediate_size": 256, "max_position_embeddings": 128,
                                          "use_parallel_residual": True},
                TrainConfig(steps=600, batch_size=32, seq_len=64, lr=3e-3, seed=1),
                "GPT-NeoX (Pythia) architecture, 2 layers, d_model 64, parallel attention and MLP, rotary"),
        ZooSpec("llama-tiny", "llama", {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                                        "num_key_value_heads": 2, "intermediate_size": 176,
                                        "max_position_embeddings": 128, "tie_word_embeddings": False},
                TrainConfig(steps=600, batch_size=32, seq_len=64, lr=3e-3, seed=2),
                "Llama architecture, 2 layers, d_model 64, grouped-query attention (2 KV heads), SwiGLU MLP"),
        ZooSpec("crate-tiny", "crate", {"n_layer": 4, "n_embd": 128, "n_head": 4, "ista_expansion": 4,
                                        "n_positions": 128},
                TrainConfig(steps=3000, batch_size=32, seq_len=64, lr=3e-3, seed=0),
                "CRATE white-box LM (lmscope.whitebox), 4 layers, d_model 128, 4 heads, overcomplete ISTA of 512 "
                "codes; gpt2-tiny's corpus and token budget"),
        ZooSpec("gpt2-tiny-relu", "gpt2", {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_inner": 512,
                                           "n_positions": 128, "activation_function": "relu"},
                TrainConfig(steps=3000, batch_size=32, seq_len=64, lr=3e-3, seed=0),
                "gpt2-tiny with a ReLU MLP (the CRATE paper's GPT baseline), same corpus and token budget"),
    )
}


def home() -> Path:
    """lmscope's cache directory (`$LMSCOPE_HOME`, default `~/.cache/lmscope`)."""
    return Path(os.environ.get("LMSCOPE_HOME", "~/.cache/lmscope")).expanduser()


def spec(name: str) -> ZooSpec:
    if name not in SPECS:
        raise InputError(f"zoo model {name!r}: unknown; the zoo has {', '.join(SPECS)}")
    return SPECS[name]


def cached_dir(name: str) -> Path:
    return home() / "zoo" / name


def locate(name: str) -> Path | None:
    """Where `zoo:NAME` is on disk (cache first, then the package), or None if it must be trained."""
    spec(name)
    use_packaged = os.environ.get("LMSCOPE_ZOO_PACKAGED", "1") != "0"  # 0: ignore shipped weights (cold start)
    for candidate in (cached_dir(name), *([PACKAGED / name] if use_packaged else [])):
        if (candidate / "config.json").exists():
            if use_packaged and candidate != PACKAGED / name and (PACKAGED / name / "config.json").exists():
                _warn_if_shadowing(name, candidate)
            return candidate
    return None


_checked: set[tuple[str, str, int]] = set()  # (name, cached dir, weights mtime): compared once per process


def _weights_digest(directory: Path) -> str:
    weights = directory / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else ""


def _warn_if_shadowing(name: str, cached: Path) -> None:
    """Warn (once per process) when a cached copy hides shipped weights that differ from it: a cache left by
    an older lmscope, or a retrain with another recipe, silently changes every figure computed on the model."""
    weights = cached / "model.safetensors"
    key = (name, str(cached), weights.stat().st_mtime_ns if weights.exists() else 0)
    if key in _checked:
        return
    _checked.add(key)
    if _weights_digest(cached) == _weights_digest(PACKAGED / name):
        return
    log.warning(f"zoo:{name}: using the cached copy in {cached}, which differs from the weights shipped with this "
                f"lmscope; delete that directory to use the shipped ones")


def ensure(name: str, *, progress: Progress | None = None) -> Path:
    """The directory of `zoo:NAME`, training it into the cache first if it is nowhere on disk."""
    found = locate(name)
    return found if found is not None else train(name, progress=progress)


def build(s: ZooSpec, vocab_size: int, bos_id: int) -> nn.Module:
    """A freshly initialised HF model of the spec's family (seeded by the spec)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(s.train.seed)
    common: dict[str, Any] = {"vocab_size": vocab_size, "bos_token_id": bos_id, "eos_token_id": bos_id,
                              "pad_token_id": bos_id}
    if s.family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(**s.arch, **common, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    if s.family == "gpt_neox":
        return GPTNeoXForCausalLM(GPTNeoXConfig(**s.arch, **common, hidden_dropout=0.0, attention_dropout=0.0))
    if s.family == "llama":
        return LlamaForCausalLM(LlamaConfig(**s.arch, **common))
    if s.family == "crate":  # lmscope's own family, not a transformers one
        from lmscope.model.crate import build_crate

        return build_crate(s.arch, vocab_size, bos_id)
    raise InputError(f"zoo family {s.family!r}: not buildable")


def corpus_streams(tokenizer: Any, n_samples: int = TRAIN_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Token streams of the training corpus and of a held-out corpus (a different seed and split)."""
    from lmscope.data.synthetic import generate_corpus

    def stream(samples: list[Any]) -> torch.Tensor:
        ids = tokenizer([s.text for s in samples], add_special_tokens=False)["input_ids"]
        return pack_tokens(ids, tokenizer.bos_token_id)

    train_samples = generate_corpus(n_samples, seed=CORPUS_SEED, split="train")
    held = generate_corpus(HELDOUT_SAMPLES, seed=CORPUS_SEED + 1000, split="heldout")
    return stream(train_samples), stream(held)


def zoo_tokenizer(n_samples: int = TRAIN_SAMPLES) -> Any:
    """The zoo's shared tokenizer, trained deterministically on (a quarter of) the training corpus."""
    from lmscope.data.synthetic import generate_corpus
    from lmscope.data.tokenizer import train_tokenizer

    return with_bos(train_tokenizer(generate_corpus(n_samples // 4, seed=CORPUS_SEED, split="train")))


def with_bos(tokenizer: Any) -> Any:
    """The zoo tokenizer made to add its BOS, as the models saw in training (in place; a no-op on the shipped
    tokenizers, which carry the template; it upgrades a copy cached by an older lmscope that did not)."""
    from lmscope.model.inputs import add_bos_template, tokenizer_adds_bos

    return tokenizer if tokenizer_adds_bos(tokenizer) else add_bos_template(tokenizer)


def train(name: str, *, out_dir: str | os.PathLike[str] | None = None, progress: Progress | None = None,
          overwrite: bool = False, steps: int | None = None, n_samples: int = TRAIN_SAMPLES) -> Path:
    """Train `zoo:NAME` from its seed and save it (to the cache unless `out_dir`); returns the directory.

    `steps` and `n_samples` shrink the recipe (for smoke tests); the defaults are the shipped recipe.
    """
    from lmscope.data.tokenizer import save_tokenizer
    from lmscope.model.zoo_eval import evaluate_zoo_model

    s = spec(name)
    target = Path(out_dir) if out_dir is not None else cached_dir(name)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise InputError(f"{target}: already exists; pass --overwrite (overwrite=True) to train {name} again")
    tokenizer = zoo_tokenizer(n_samples)
    train_stream, held_stream = corpus_streams(tokenizer, n_samples)
    model = build(s, len(tokenizer), tokenizer.bos_token_id)
    recipe = s.train if steps is None else replace(s.train, steps=steps)
    log: TrainLog = train_causal_lm(model, train_stream, recipe, progress=progress)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(STORAGE_DTYPE).float())
    card = {
        "name": name, "family": s.family, "description": s.description,
        "n_params": sum(p.numel() for p in model.parameters()),
        "train": asdict(recipe), "corpus": {"seed": CORPUS_SEED, "train_samples": n_samples,
                                             "train_tokens": int(train_stream.numel())},
        "curve": log.to_dict(),
        "heldout_loss": heldout_loss(model, held_stream, s.train.seq_len),
        "unigram_loss": unigram_loss(train_stream, held_stream, len(tokenizer)),
        **evaluate_zoo_model(model, tokenizer),
    }
    _save_atomically(target, model, tokenizer, card, save_tokenizer)
    return target


def _save_atomically(target: Path, model: nn.Module, tokenizer: Any, card: dict[str, Any],
                     save_tokenizer: Callable[[Any, Path], Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        hf_module(model).to(STORAGE_DTYPE).save_pretrained(tmp)
        model.float()
        save_tokenizer(tokenizer, tmp)
        (tmp / "zoo_card.json").write_text(json.dumps(card, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def card(name: str) -> dict[str, Any] | None:
    """The zoo card of a model on disk, or None if it has not been trained."""
    found = locate(name)
    if found is None or not (found / "zoo_card.json").exists():
        return None
    return json.loads((found / "zoo_card.json").read_text())


def listing() -> list[dict[str, Any]]:
    """One row per zoo model: name, family, description, where it is (or 'not trained')."""
    rows = []
    for name, s in SPECS.items():
        found = locate(name)
        where = "not trained" if found is None else ("packaged" if found.parent == PACKAGED else str(found))
        rows.append({"name": name, "family": s.family, "description": s.description, "location": where})
    return rows
