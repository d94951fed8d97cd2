"""`Section` and `Report`: what analyses contribute to, and a page that `Report.write` puts in a directory as
report.html with its result.json (kind "report") through the one writer, `lmscope.results.write_result`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from lmscope.errors import InputError
from lmscope.report.blocks import Block
from lmscope.report.html import render_page
from lmscope.results import HTML_NAME, RESULT_NAME, json_safe, write_result

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
JSON_NAME = RESULT_NAME
__all__ = ["HTML_NAME", "JSON_NAME", "Report", "Section", "lmscope_version"]


def lmscope_version() -> str | None:
    """The installed lmscope version, or None when running from an uninstalled tree."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version("lmscope")
    except PackageNotFoundError:
        return None


@dataclass
class Section:
    """One analysis' part of the report.

    `key` is a stable id (letters, digits, `_ . -`) used as the HTML anchor and as the key in
    result.json's `sections`; `blocks` are drawn in order; `data` is the section's JSON-safe payload.
    """

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            raise InputError(f"section key {self.key!r}: expected letters, digits, '_', '.' or '-' (e.g. 'model_card')")
        for i, block in enumerate(self.blocks):
            if not isinstance(block, Block):
                raise TypeError(f"section {self.key!r} block {i}: {type(block).__name__} has no to_html")

    def to_dict(self) -> dict[str, Any]:
        """The section's entry in result.json: its title and data."""
        return {"title": self.title, "data": json_safe(self.data)}


class Report:
    """A titled, ordered collection of sections, rendered to one self-contained HTML page (a result of kind
    "report": its result.json holds every section's data)."""

    kind: ClassVar[str] = "report"

    def __init__(self, title: str, *, meta: dict[str, Any] | None = None, created: datetime | None = None) -> None:
        """`meta` (model id, command, ...) is shown in the header and stored in result.json."""
        self.title = title
        self.meta: dict[str, Any] = dict(meta or {})
        self.created = (created or datetime.now(UTC)).replace(microsecond=0)
        self.version = lmscope_version()
        self._sections: dict[str, Section] = {}

    @property
    def sections(self) -> list[Section]:
        """Sections in the order they were added."""
        return list(self._sections.values())

    def add(self, section: Section) -> Section:
        """Append `section`; a second section with the same key is refused."""
        if section.key in self._sections:
            raise InputError(f"report section {section.key!r}: a section with this key was already added")
        self._sections[section.key] = section
        return section

    def __contains__(self, key: object) -> bool:
        return key in self._sections

    def __getitem__(self, key: str) -> Section:
        return self._sections[key]

    def __len__(self) -> int:
        return len(self._sections)

    def to_dict(self) -> dict[str, Any]:
        """The result.json payload: title, created, lmscope version, meta and every section's data."""
        return {
            "title": self.title,
            "created": self.created.isoformat(),
            "lmscope_version": self.version,
            "meta": json_safe(self.meta),
            "sections": {key: section.to_dict() for key, section in self._sections.items()},
        }

    def render_html(self) -> str:
        """The full, offline HTML page."""
        created = self.created.strftime("%Y-%m-%d %H:%M:%S UTC")
        return render_page(self.title, created, self.sections, self.meta, self.version)

    def write(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> dict[str, Path]:
        """Write `report.html` and `result.json` into `out_dir` atomically.

        Both targets are checked before either is written, so a refusal (an existing file without
        `overwrite=True`) leaves the directory untouched. Returns {"html": path, "json": path}.
        """
        paths = write_result(out_dir, self, html=self.render_html(), overwrite=overwrite)
        return {"html": paths["html"], "json": paths["json"]}

    def save(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> dict[str, Path]:
        """`write`, under the name every result has."""
        return self.write(out_dir, overwrite=overwrite)
