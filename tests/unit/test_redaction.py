"""Secrets and personal data never leave the process; the answer gets them back. (The kinds
found by shape: names need a model, tested in tests/integration/test_redaction_names.py.)"""

import pytest

from libs.common.redaction import PATTERN_KINDS, Redactor

TICKET = """Hi team, Maria Lopez (maria.lopez@client.example, +44 20 7946 0958) cannot log in.
L1 reset her account; temp password is Winter2026!Blue and she must change it at next login.
The app server uses Server=sql01;Database=crm;User Id=crm_app;Password=S3cr3t-Pa55;
Backup job runs with postgres://backup:Xy9#kLm2@db01.client.local:5432/crm
Someone pasted an AWS key AKIAIOSFODNN7EXAMPLE and a token: Bearer {JWT}
Her company card 4111 1111 1111 1111 was charged twice; invoice 2026-11-25 #100234.
""".replace(
    "{JWT}", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
SECRETS = [
    "Winter2026!Blue",
    "S3cr3t-Pa55",
    "Xy9#kLm2",
    "AKIAIOSFODNN7EXAMPLE",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "4111 1111 1111 1111",
    "maria.lopez@client.example",
    "+44 20 7946 0958",
]


def test_no_planted_secret_or_personal_datum_survives_redaction() -> None:
    red = Redactor(set(PATTERN_KINDS)).redact(TICKET)
    for secret in SECRETS:
        assert secret not in red.text, secret
    assert "[SECRET_1]" in red.text and "[EMAIL_1]" in red.text and "[CARD_1]" in red.text
    # What the judgement needs stays: the situation, the hosts, the dates.
    assert "cannot log in" in red.text and "sql01" in red.text and "2026-11-25" in red.text


def test_the_answer_gets_the_values_back() -> None:
    red = Redactor(set(PATTERN_KINDS)).redact(TICKET)
    email = next(p for p, v in red.mapping.items() if v == "maria.lopez@client.example")
    answer = f"Send the reset confirmation to {email} after verifying by phone."
    assert red.restore(answer) == (
        "Send the reset confirmation to maria.lopez@client.example after verifying by phone."
    )


def test_the_same_value_gets_the_same_placeholder_across_texts() -> None:
    redactor = Redactor(set(PATTERN_KINDS))
    first = redactor.redact("password: Hunter2-again for jo@x.example")
    second = redactor.redact("jo@x.example says the password: Hunter2-again works", into=first)
    assert second.text == "[EMAIL_1] says the password: [SECRET_1] works"


def test_numbers_that_are_not_cards_stay() -> None:
    red = Redactor(set(PATTERN_KINDS)).redact(
        "Ticket 1234567890123 (not a card: Luhn fails) and order 4111111111111112"
    )
    assert "[CARD" not in red.text


@pytest.mark.parametrize("kinds,kept", [({"SECRET"}, "maria.lopez@client.example")])
def test_personal_data_can_be_kept_when_the_judgement_needs_it(kinds: set[str], kept: str) -> None:
    red = Redactor(kinds=kinds).redact(TICKET)
    assert kept in red.text
    assert "Winter2026!Blue" not in red.text  # secrets are always redacted


def test_values_with_quotes_and_backslashes_are_put_back_into_the_parsed_answer() -> None:
    from libs.common.llm import _restore
    from libs.common.redaction import Redacted

    # A value that holds a quote and backslashes: restored into JSON text, it broke the answer.
    redacted = Redacted("the password is <SECRET_1>", {"<SECRET_1>": 'Pa"ss\\word9!\\'})
    placeholders = list(redacted.mapping)
    answer = {
        "steps": [{"action": "identity.reset_password", "params": {"password": placeholders[0]}}],
        "note": f"use {placeholders[0]} once",
        placeholders[0]: "as a key too",
    }
    back = _restore(answer, redacted)
    original = redacted.mapping[placeholders[0]]
    assert back["steps"][0]["params"]["password"] == original
    assert back["note"] == f"use {original} once" and back[original] == "as a key too"
