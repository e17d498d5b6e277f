"""Source adapters: each maps one tool's real payload into v1 events (pure, no I/O).

Alert sources give `AlertReceived` events directly. PSA sources give `TicketObservation`s:
what the PSA says the ticket looks like now; `lifecycle.classify` turns an observation and
the last known state of the ticket into a `TicketEvent` (created, escalated, resolved, ...).
"""
