"""The action catalogue: every action the platform can plan and run, one module each under
`actions/` (adding an action is adding a module that defines `ACTION`)."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from services.automation.catalogue import actions as _actions
from services.automation.catalogue.base import Action, Params, idempotency_key, param_errors

__all__ = ["Action", "Params", "catalogue", "get", "idempotency_key", "param_errors"]


@cache
def catalogue() -> dict[str, Action]:
    found: dict[str, Action] = {}
    for info in sorted(pkgutil.iter_modules(_actions.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{_actions.__name__}.{info.name}")
        action = getattr(module, "ACTION", None)
        if not isinstance(action, Action):
            raise TypeError(f"{module.__name__} defines no ACTION")
        if action.name in found:
            raise ValueError(f"action {action.name} is defined twice")
        found[action.name] = action
    return found


def get(name: str) -> Action | None:
    return catalogue().get(name)
