"""The end-to-end platform's fixtures (tests/e2e/platform.py), for every module here."""

from tests.e2e.platform import collector, platform  # noqa: F401
