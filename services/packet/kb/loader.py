"""Runbooks from a folder: every Markdown file under it, named by its path relative to it."""

from __future__ import annotations

from pathlib import Path

from services.packet.kb.markdown import Runbook, parse

MAX_BYTES = 1_000_000


def load_dir(folder: Path) -> list[tuple[str, Runbook]]:
    """(relative path, runbook) for every `*.md` / `*.markdown` under `folder`, sorted by path.
    A file that is not UTF-8, too large or has broken front matter is an error naming it."""
    if not folder.is_dir():
        raise ValueError(f"no runbook folder at {folder}")
    out = []
    for path in sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in (".md", ".markdown") and p.is_file()
    ):
        rel = path.relative_to(folder).as_posix()
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"{rel}: larger than {MAX_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{rel}: not UTF-8 text") from None
        try:
            out.append((rel, parse(text, fallback_title=path.stem)))
        except ValueError as exc:
            raise ValueError(f"{rel}: {exc}") from None
    if not out:
        raise ValueError(f"no Markdown runbooks under {folder}")
    return out
