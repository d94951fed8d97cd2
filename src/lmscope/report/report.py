"""`Section` and `Report`: what analyses contribute to, and what writes report.html and result.json."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmscope.errors import InputError
from lmscope.fileio import atomic_write_json, atomic_write_text, check_writable
from lmscope.report._json import json_safe
from lmscope.report.blocks import Block
from lmscope.report.html import render_page

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
HTML_NAME = "report.html"
JSON_NAME = "result.json"


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
    """A titled, ordered collection of sections, rendered to one self-contained HTML page."""

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
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: is a file, expected an output directory")
        html_path = check_writable(out / HTML_NAME, overwrite=overwrite)
        json_path = check_writable(out / JSON_NAME, overwrite=overwrite)
        payload = self.to_dict()
        page = self.render_html()
        atomic_write_json(json_path, payload, overwrite=overwrite)
        atomic_write_text(html_path, page, overwrite=overwrite)
        return {"html": html_path, "json": json_path}
