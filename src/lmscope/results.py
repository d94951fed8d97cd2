"""The results layer: one protocol, one writer and one reader of `result.json`.

Every analysis result names its `kind`, turns itself into plain JSON with `to_dict()`, and saves and loads
through `ResultMixin` (one `save`, one `load`, instead of one copy per class). `write_result` is the only
place that writes `result.json` (and `report.html` beside it when given a page): it adds `kind` and the
lmscope `version` to every file, so no result can forget them. `read_result` reads one back as untrusted
input: every failure is one `InputError` naming the file.

A bottom-layer module: it imports only `lmscope.errors`, `lmscope.fileio`, the standard library and numpy,
so every analysis (and the report, which sits on top) may use it.

    @dataclass
    class Scores(ResultMixin):
        kind: ClassVar[str] = "scores"
        values: list[float]
        def to_dict(self): return {"values": self.values}
        @classmethod
        def from_dict(cls, d): return cls(list(d["values"]))

    Scores([1.0]).save("out/")            # out/result.json: {"kind": "scores", "version": "0.1.0", "values": [1.0]}
    Scores.load("out/")                   # Scores(values=[1.0])
    read_result("out/")["kind"]           # "scores"
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from lmscope.errors import InputError
from lmscope.fileio import atomic_write_json, atomic_write_text, check_writable

RESULT_NAME = "result.json"
HTML_NAME = "report.html"
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RESERVED = ("kind", "version")
LEGACY_KEYS: dict[str, frozenset[str]] = {kind: frozenset(keys.split()) for kind, keys in {
    "succession": "mode scores per_task ood top_heads",
    "head_detectors": "scores top_heads seq_len n_seqs fold_ln",
    "mod10_features": "features choices seeds probe scales",
    "vector_arithmetic": "by_k pairs rates n_edits overall",
    "heads_in_the_wild": "categories counts category_tops",
    "activation_patching": "components mean_effect recovered effects y_base y_source",
    "mediation": "components outcome effects localization by_stratum strata",
    "circuit": "prompt attribution paths graph",
    "circuit_graph": "target target_value threshold nodes edges",
    "report": "title created sections",
}.items()}
"""Files written before lmscope recorded `kind`, told apart by keys only that analysis wrote."""


def lmscope_version() -> str:
    """The installed lmscope version (package metadata), or `lmscope.__version__` in an uninstalled tree (read
    from the already imported package root: the layering keeps this module from importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lmscope")
    except PackageNotFoundError:
        return str(sys.modules["lmscope"].__version__)


def to_list(values: Any) -> list[Any]:
    """Return `values` (list, tuple, numpy array or torch tensor) as a nested Python list."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        return json_safe(values.tolist())
    return json_safe(list(values))


def json_safe(obj: Any) -> Any:
    """Convert `obj` into plain JSON data; non-finite floats become None so the output is strict JSON."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, Mapping):
        return {str(key): json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((json_safe(value) for value in obj), key=repr)
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return json_safe(obj.detach().cpu().tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(dataclasses.asdict(obj))
    if hasattr(obj, "to_dict"):
        return json_safe(obj.to_dict())
    raise TypeError(f"cannot put a {type(obj).__name__} into result.json: {obj!r:.80}")


def number(value: Any) -> float:
    """A float from a result file, where `json_safe` wrote a non-finite value as null: null reads back as NaN."""
    return math.nan if value is None else float(value)


def numbers(values: Any) -> Any:
    """`values` (nested lists of numbers or nulls) with every null as NaN, e.g. to rebuild a tensor."""
    if isinstance(values, list):
        return [numbers(v) for v in values]
    return number(values)


@runtime_checkable
class Result(Protocol):
    """What every analysis result offers: its `kind`, the lmscope `version` that made it, JSON-safe
    `to_dict()`, `save(dir)` and (where the file holds everything) the classmethod `load(dir)`."""

    kind: ClassVar[str]

    @property
    def version(self) -> str | None: ...

    def to_dict(self) -> dict[str, Any]: ...

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Any:
        """Write `result.json` into `directory`; returns its path (or, for a result that also writes its
        `report.html`, both paths as `{"json": ..., "html": ...}`)."""


R = TypeVar("R", bound="ResultMixin")


class ResultMixin:
    """`save` and `load` written once, from a class's `kind`, `to_dict()` and `from_dict(d)`.

    `from_dict` receives the file's dict with `kind` and `version` still in it (ignore them); a class whose
    `result.json` is a summary that cannot rebuild it (a circuit keeps only the top attribution terms) leaves
    `from_dict` out, and its file is read with `read_result` instead.
    """

    kind: ClassVar[str] = ""
    what: ClassVar[str] = ""  # how a refusal names it, e.g. "neuron ranking (written by `lmscope neurons rank`)"
    _loaded: tuple[str | None] | None = None  # (the file's version,) once `load` read it

    @property
    def version(self) -> str | None:
        """The lmscope version that made this result: the file's for a loaded one (None in a file written
        before lmscope recorded it), else the running one."""
        return self._loaded[0] if self._loaded is not None else lmscope_version()

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        raise NotImplementedError(f"{cls.__name__} is not rebuilt from its result.json; read it with read_result")

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False, html: str | None = None) -> Path:
        """Write `directory/result.json` atomically (refused if present unless `overwrite`), and `report.html`
        beside it when given the page (both checked before either is written); returns result.json's path."""
        return write_result(directory, self, html=html, overwrite=overwrite)["json"]

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a result.json of this kind (or the directory holding it); a file written before lmscope recorded
        `kind` is read as this kind. Every failure is one InputError naming the file."""
        source = result_path(path)
        d = read_result(source, kind=cls.kind)
        try:
            obj = cls.from_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError) as err:
            what = cls.what or f"{cls.kind.replace('_', ' ')} result"
            raise InputError(f"{source}: not a {what} ({err!r:.120})") from None
        obj._loaded = (d.get("version"),)
        return obj


def result_path(path: str | os.PathLike[str]) -> Path:
    """`path/result.json` for a directory, else `path` itself."""
    source = Path(path)
    return source / RESULT_NAME if source.is_dir() else source


def result_payload(result: Result | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON written for `result`: `kind` and `version` first, then `to_dict()` (or the mapping) made JSON-safe.

    A mapping must carry its own `kind`; a result whose `to_dict()` names a different kind than its class is a bug.
    """
    if isinstance(result, Mapping):
        body = dict(result)
        kind = body.get("kind")
    else:
        body = dict(result.to_dict())
        kind = type(result).kind
        if body.get("kind", kind) != kind:
            raise ValueError(f"{type(result).__name__}.to_dict() names kind {body['kind']!r}, its class {kind!r}")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"a result needs a kind of lowercase letters, digits and '_', got {kind!r}")
    version = body.get("version") if isinstance(result, Mapping) and body.get("version") else lmscope_version()
    rest = {k: v for k, v in body.items() if k not in _RESERVED}
    return {"kind": kind, "version": version, **json_safe(rest)}


def write_result(directory: str | os.PathLike[str], result: Result | Mapping[str, Any], *, html: str | None = None,
                 overwrite: bool = False) -> dict[str, Path]:
    """The one writer of `result.json` (and, given `html`, `report.html`) in `directory`.

    `result` is a result object or a mapping with a `kind`; the file gets `kind` and `version` whatever the
    object's `to_dict()` says. Both targets are checked before either is written, so a refusal (a file already
    there without `overwrite=True`, a file where the directory should be) leaves nothing behind. Returns
    `{"json": path}` plus `"html": path` when a page was written.
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file, expected an output directory")
    targets = {"json": check_writable(out / RESULT_NAME, overwrite=overwrite)}
    if html is not None:
        targets["html"] = check_writable(out / HTML_NAME, overwrite=overwrite)
    payload = result_payload(result)
    atomic_write_json(targets["json"], payload, overwrite=overwrite)
    if html is not None:
        atomic_write_text(targets["html"], html, overwrite=overwrite)
    return targets


class _NonFinite(Exception):
    pass


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


def read_result(path: str | os.PathLike[str], *, kind: str | Collection[str] | None = None) -> dict[str, Any]:
    """Read and check a `result.json` (or the directory holding it): a JSON object whose `kind` is a name
    (one of `kind` when given) and whose `version` is a string.

    A file without `kind` (written before lmscope recorded one) gets the kind its keys show (`LEGACY_KEYS`), or
    the caller's when it names a single one, with `version` None; otherwise it is refused, since nothing in it
    says what it is. Every failure is one InputError naming the file.
    """
    source = result_path(path)
    try:
        d = json.loads(source.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except _NonFinite as err:
        raise InputError(f"{source}: holds {err}, which strict JSON has not (lmscope writes null)") from None
    except FileNotFoundError:
        raise InputError(f"{source}: no such file; expected a result.json written by lmscope") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{source}: not JSON ({err.msg} at line {err.lineno}); expected a result.json") from None
    except (UnicodeDecodeError, RecursionError) as err:
        raise InputError(f"{source}: not readable JSON ({type(err).__name__}); expected a result.json") from None
    except OSError as err:
        raise InputError(f"{source}: cannot be read ({err.strerror or err})") from None
    if not isinstance(d, dict):
        raise InputError(f"{source}: holds a JSON {type(d).__name__}, expected an object with a 'kind'")
    expected = [kind] if isinstance(kind, str) else (sorted(kind) if kind is not None else None)
    found = d.get("kind")
    if found is None:
        shown = [k for k, keys in LEGACY_KEYS.items() if keys <= d.keys() and (expected is None or k in expected)]
        if len(shown) == 1 or (expected is not None and len(expected) == 1):
            inferred = shown[0] if len(shown) == 1 else expected[0]  # type: ignore[index]
        else:
            raise InputError(f"{source}: names no 'kind' (written before lmscope recorded one) and its keys do not "
                             "show which result it is; load it with its analysis' own load()")
        d = {"kind": inferred, "version": None, **d}
    elif not isinstance(found, str) or not _KIND.match(found):
        raise InputError(f"{source}: 'kind' is {found!r:.60}, expected a name such as 'neuron_ranking'")
    elif expected is not None and found not in expected:
        raise InputError(f"{source}: holds a {found!r} result, expected {' or '.join(map(repr, expected))}")
    version = d.get("version")
    if version is not None and not isinstance(version, str):
        raise InputError(f"{source}: 'version' is {version!r:.60}, expected the lmscope version string")
    return d
