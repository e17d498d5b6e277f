"""PSA notes through the bus: the step's result event (automation.results.v1) carries the note,
and the packet service's PSA writers post it into the ticket, once, with their own outbox,
retries and audit. Nothing here talks to a PSA."""

from __future__ import annotations

from typing import Any, ClassVar

from services.automation.connectors.base import Connector, ConnectorConfig


class PsaBusConfig(ConnectorConfig):
    pass


class PsaBus(Connector):
    kind: ClassVar[str] = "psa_bus"
    config_model: ClassVar[type[ConnectorConfig]] = PsaBusConfig
    actions: ClassVar[frozenset[str]] = frozenset({"psa.add_note"})
    # The note is the result event itself: staging it twice stages it once (same event id).
    repeatable: ClassVar[frozenset[str]] = actions

    def add_note(self, p: Any, *, key: str) -> dict[str, Any]:
        return {"note": p.text, "posted_by": "packet service (PSA writers)", "note_key": key}
