"""Secrets and personal data never leave the process; the answer gets them back."""

import pytest

from libs.common.redaction import Redactor

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
    red = Redactor().redact(TICKET)
    for secret in SECRETS:
        assert secret not in red.text, secret
    assert "[SECRET_1]" in red.text and "[EMAIL_1]" in red.text and "[CARD_1]" in red.text
    # What the judgement needs stays: the situation, the hosts, the dates.
    assert "cannot log in" in red.text and "sql01" in red.text and "2026-11-25" in red.text


def test_the_answer_gets_the_values_back() -> None:
    red = Redactor().redact(TICKET)
    email = next(p for p, v in red.mapping.items() if v == "maria.lopez@client.example")
    answer = f"Send the reset confirmation to {email} after verifying by phone."
    assert red.restore(answer) == (
        "Send the reset confirmation to maria.lopez@client.example after verifying by phone."
    )


def test_the_same_value_gets_the_same_placeholder_across_texts() -> None:
    redactor = Redactor()
    first = redactor.redact("password: Hunter2-again for jo@x.example")
    second = redactor.redact("jo@x.example says the password: Hunter2-again works", into=first)
    assert second.text == "[EMAIL_1] says the password: [SECRET_1] works"


def test_numbers_that_are_not_cards_stay() -> None:
    red = Redactor().redact("Ticket 1234567890123 (not a card: Luhn fails) and order 4111111111111112")
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


def test_peoples_names_are_redacted_and_come_back() -> None:
    text = (
        "Hi, please add Dana to VPN-Users; her login is dana.whitfield@northwind.example. "
        "Set her OOO: 'Please contact Ben Carter' and give Ben FullAccess to the mailbox."
    )
    red = Redactor().redact(text)
    for name in ("Dana", "Ben Carter", "Ben"):
        assert any(v == name for p, v in red.mapping.items() if p.startswith("[PERSON_")), red.text
    assert "Dana" not in red.text and "Carter" not in red.text and " Ben " not in red.text
    # The address keeps its own placeholder; a word that is not a name stays.
    assert "[EMAIL_1]" in red.text and "FullAccess" in red.text and "VPN-Users" in red.text
    assert red.restore(red.text) == text


def test_what_is_not_written_as_a_name_is_not_taken_for_one() -> None:
    # In a text that uses capitals, a lower-case phrase is not a name; nor is a word with digits.
    red = Redactor().redact("AWS: detach ReadOnlyAccess from iam user audit-2024, then reboot SQL01")
    assert "[PERSON" not in red.text, red.text
    # In a ticket written all in lower case (as many PSA exports are), names are lower case too.
    red = Redactor().redact("please reset the password for maria garcia, she is locked out")
    assert "maria garcia" not in red.text and "[PERSON_1]" in red.text


def test_names_are_kept_when_the_judgement_needs_them() -> None:
    red = Redactor(kinds={"EMAIL"}).redact("Call Maria Lopez back")
    assert red.text == "Call Maria Lopez back"


def test_the_redaction_eval_derives_names_from_the_cases_own_identities() -> None:
    from evals.redaction import _mentions, _people

    case = {
        "instruction": "Add Nadia to Hygienists, and tell the office manager",
        "ticket": {"requester": "office.manager@lumen.example"},
        "expected": [{"params": {"user": "nadia.haddad@lumen.example"}}],
    }
    people = _people(case)
    assert ("nadia", "haddad") in people
    # Only capitalised mentions count: "office" and "manager" are written as words, not names.
    assert _mentions(case["instruction"], people) == ["Nadia"]
