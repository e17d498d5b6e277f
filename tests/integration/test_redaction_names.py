"""People's names are found by the named-entity model (spaCy's small English pipeline, loaded
from its wheel) and never leave the process; the eval derives its ground truth on its own."""

import pytest

from libs.common.redaction import Redactor

pytestmark = pytest.mark.integration


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
