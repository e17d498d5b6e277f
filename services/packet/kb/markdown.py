"""Runbooks as sections: Markdown (with or without YAML front matter) split at its headings.

A section keeps the document's title and its heading path, so "Mitigation" of one runbook is
told apart from "Mitigation" of another, and a link that lands on the section (an anchor made
from the heading, as common Markdown renderers make it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Section:
    heading: str  # "" for the text before the first heading
    path: tuple[str, ...]  # headings from the top down to this one
    anchor: str
    text: str  # the section's own body, without its heading


@dataclass(frozen=True)
class Runbook:
    title: str
    meta: dict[str, object]
    sections: tuple[Section, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(f"{s.heading}\n{s.text}".strip() for s in self.sections)


def anchor(heading: str) -> str:
    """The anchor GitHub-style renderers give a heading: lower case, punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return re.sub(r"\s", "-", text)


def parse(source: str, *, fallback_title: str) -> Runbook:
    """Split one Markdown document. Headings inside fenced code blocks are code, not headings."""
    meta: dict[str, object] = {}
    body = source.replace("\r\n", "\n")
    m = _FRONT.match(body)
    if m:
        try:
            loaded = yaml.safe_load(m.group(1))
        except yaml.YAMLError as exc:
            raise ValueError(f"front matter is not valid YAML: {exc}") from None
        if isinstance(loaded, dict):
            meta = {str(k): v for k, v in loaded.items()}
        body = body[m.end() :]
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    heading, fenced = "", False
    lines: list[str] = []
    h1: str | None = None

    def close() -> None:
        text = "\n".join(lines).strip()
        if heading or text:
            sections.append(
                Section(heading, tuple(h for _, h in path), anchor(heading) if heading else "", text)
            )

    for line in body.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        hm = None if fenced else _HEADING.match(line)
        if hm is None:
            lines.append(line)
            continue
        close()
        level, heading, lines = len(hm.group(1)), hm.group(2).strip(), []
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))
        if level == 1 and h1 is None:
            h1 = heading
    close()
    title = str(meta.get("title") or h1 or fallback_title)
    return Runbook(title=title, meta=meta, sections=tuple(sections))
