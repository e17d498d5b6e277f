"""The packet service's state, one module per concern (every function takes the tenant, or a key
that belongs to one, explicitly; the tables are declared in `services/packet/tables.py`):

- `projections`: tickets, signals, triage results and action runs, from the consumed topics;
- `runbooks`: the knowledge base's runbooks and their section vectors;
- `versions`: packet versions and the delivery of each version's PSA note;
- `psa_writes`: the other PSA writes (step notes, categories);
- `targets`: the tenants' PSA targets;
- `feedback`: engineers' verdicts on packets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine


def when(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def dumps(value: Any) -> str:
    """Compact JSON for a text column."""
    return json.dumps(value, separators=(",", ":"), default=str)


@contextmanager
def reading(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection to read on: the caller's, or one of the engine's for this read alone."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn


@contextmanager
def writing(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection to write on: the caller's, in the caller's transaction (committed with
    the rest of it), or a transaction of its own."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn
