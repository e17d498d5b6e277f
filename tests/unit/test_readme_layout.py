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


def test_the_walk_through_names_functions_that_exist() -> None:
    """Every `file` `function` pair in "Follow one alert" imports: renaming or moving a stop
    without updating the README fails here."""
    import importlib

    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("## Follow one alert")
    section = text[start : text.index("\n## ", start + 3)]
    stops = re.findall(r"^\d+\. ", section, flags=re.M)
    pairs = re.findall(r"`([\w/]+)\.py`\s+`([\w.]+)`", section)
    assert len(stops) >= 10 and len(pairs) >= len(stops)
    unresolved = []
    for path, qualname in pairs:
        assert (REPO_ROOT / f"{path}.py").is_file(), f"{path}.py does not exist"
        obj: object = importlib.import_module(path.replace("/", "."))
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if not callable(obj):
            unresolved.append(f"{path}.py {qualname}")
    assert unresolved == [], f"stops that name nothing: {unresolved}"
