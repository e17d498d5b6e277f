"""The local path's judgements that need no model: steps from what succeeded, failures from
error classes, the extractive summary."""

from __future__ import annotations

import pytest

from libs.common.reasoning import (
    AnalyseFailureInput,
    Evidence,
    ExtractStepsInput,
    RecordedAction,
    SummariseInput,
    analyse_failure_locally,
    extract_steps_locally,
    summarise_locally,
)
from tests.samples import TICKET


def test_steps_are_extracted_from_what_succeeded_with_ticket_values_as_placeholders() -> None:
    out = extract_steps_locally(
        ExtractStepsInput(
            actions=[
                RecordedAction(action="ad.unlock_account", params={"user": "anna.berg"}, outcome="ok"),
                RecordedAction(action="ad.reset_password", params={"user": "anna.berg"}, outcome="failed"),
                RecordedAction(action="ad.reset_password", params={"user": "anna.berg"}, outcome="ok"),
                RecordedAction(action="ad.reset_password", params={"user": "anna.berg"}, outcome="ok"),
                RecordedAction(
                    action="rmm.restart_service",
                    params={"device": "PC-12", "service": "spooler"},
                    outcome="ok",
                ),
            ],
            ticket=TICKET,
        )
    )
    assert [(s.action, s.params) for s in out.steps] == [
        ("ad.unlock_account", {"user": "{requester}"}),
        ("ad.reset_password", {"user": "{requester}"}),
        ("rmm.restart_service", {"device": "{device}", "service": "spooler"}),
    ]


@pytest.mark.parametrize(
    ("error_class", "message", "category", "retry"),
    [
        ("ReadTimeout", "", "transient", True),
        ("HTTPStatusError", "HTTP 429 Too Many Requests", "transient", True),
        ("HTTPStatusError", "HTTP 401 Unauthorized: invalid_grant", "auth", False),
        ("GraphError", "Insufficient privileges to complete the operation", "permission", False),
        ("LDAPError", "No such object", "not_found", False),
        ("HTTPStatusError", "HTTP 409: user is already a member", "conflict", False),
        ("ValidationError", "password does not meet the policy", "invalid_input", False),
        ("KeyError", "'sAMAccountName'", "unknown", False),
    ],
)
def test_failures_are_analysed_from_the_error_classes_connectors_raise(
    error_class: str, message: str, category: str, retry: bool
) -> None:
    out = analyse_failure_locally(
        AnalyseFailureInput(action="ad.reset_password", error_class=error_class, message=message)
    )
    assert (out.category, out.retry) == (category, retry)
    assert out.cause and out.advice


def test_the_local_summary_is_extractive_and_cites_each_sentence() -> None:
    out = summarise_locally(
        SummariseInput(
            subject="S: drive full",
            sources=[
                Evidence(
                    key="ticket", kind="ticket", id="1", excerpt="Users cannot save to S:. It started at 9."
                ),
                Evidence(key="note:1", kind="note", id="1/n1", excerpt="Cleared temp files, still full."),
            ],
        )
    )
    assert [(s.text, s.sources) for s in out.sentences] == [
        ("Users cannot save to S:.", ["ticket"]),
        ("Cleared temp files, still full.", ["note:1"]),
    ]
