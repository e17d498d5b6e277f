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
from datetime import datetime
from typing import Any


def when(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def dumps(value: Any) -> str:
    """Compact JSON for a text column."""
    return json.dumps(value, separators=(",", ":"), default=str)
