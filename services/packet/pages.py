"""The packet service's HTML: the PSA note and the pages (a packet, a runbook), rendered from the
Jinja2 templates in `templates/` with autoescaping on, so text from tickets, alerts and
runbooks is always shown as text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt name fails the render instead of showing nothing
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # the templates ship with the code: no stat() of the file per render
)


def render(template: str, **context: Any) -> str:
    return _ENV.get_template(template).render(**context)


def pdf(html: str) -> bytes:
    """An HTML page as PDF (WeasyPrint: no browser, no network; the page links nothing)."""
    from weasyprint import HTML

    return HTML(string=html).write_pdf()  # type: ignore[no-any-return]
