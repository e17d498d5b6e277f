"""The README's layout names every module a newcomer would look for: each module of the
command, the shared library and each service (a file added without a word in the map fails
here)."""

from __future__ import annotations

import re

from libs.common.settings import REPO_ROOT

SKIP = {"__init__", "__main__", "settings", "app", "api", "tables"}  # the shape every service has


def layout() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("## Layout")
    return text[start : text.index("```", text.index("```", start) + 3)]


def test_every_module_is_on_the_map() -> None:
    words = set(re.findall(r"[a-z_]+", layout()))
    missing = []
    for folder in (
        "cli",
        "libs/common",
        *[f"services/{p.name}" for p in (REPO_ROOT / "services").iterdir() if p.is_dir()],
    ):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if "migrations" in path.parts or "actions" in path.parts or "__pycache__" in path.parts:
                continue
            name = path.stem
            if name in SKIP or name in words:
                continue
            missing.append(str(path.relative_to(REPO_ROOT)))
    assert missing == [], f"modules the README's layout does not name: {missing}"
