"""Runbooks as sections: Markdown (with or without YAML front matter) split at its headings.

A section keeps the document's title and its heading path, so "Mitigation" of one runbook is
told apart from "Mitigation" of another, and a link that lands on the section (an anchor made
from the heading, as common Markdown renderers make it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import frontmatter
import yaml
from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark")


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
    """Split one Markdown document at its headings, as a CommonMark parser (markdown-it-py)
    finds them: ATX and setext headings, never a line inside a code block or fence. Each
    section's text is the source between its heading and the next."""
    body = source.replace("\r\n", "\n")
    try:
        post = frontmatter.loads(body)
    except yaml.YAMLError as exc:
        raise ValueError(f"front matter is not valid YAML: {exc}") from None
    except ValueError as exc:  # front matter that is not a mapping
        raise ValueError(f"front matter is not a mapping: {exc}") from None
    meta = {str(k): v for k, v in post.metadata.items()}
    body = post.content
    lines = body.split("\n")
    tokens = _MD.parse(body)
    # (first line, line after, level, text) of every heading, in order
    headings = [
        (tok.map[0], tok.map[1], int(tok.tag[1]), tokens[i + 1].content.strip())
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open" and tok.map is not None
    ]
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    h1: str | None = None
    starts = [(0, 0, 0, "")] + headings
    for n, (_, body_from, level, heading) in enumerate(starts):
        body_to = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        if heading:
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, heading))
            if level == 1 and h1 is None:
                h1 = heading
        text = "\n".join(lines[body_from:body_to]).strip()
        if heading or text:
            sections.append(
                Section(heading, tuple(h for _, h in path), anchor(heading) if heading else "", text)
            )
    title = str(meta.get("title") or h1 or fallback_title)
    return Runbook(title=title, meta=meta, sections=tuple(sections))
