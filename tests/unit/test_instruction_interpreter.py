"""The local interpreter on instructions written for these tests (not the evaluation set):
ordering words, several targets in one clause, pronouns, the ticket as a source, questions
instead of guesses, and refusal when no action fits."""

from __future__ import annotations

from typing import Any

from services.automation.interpret import LocalInterpreter, Ticket

interpreter = LocalInterpreter()


def plan(
    text: str, requester: str | None = "pkim", device: str | None = "HQ-LT-204", summary: str = ""
) -> Any:
    return interpreter.interpret(text, Ticket(requester=requester, device=device, summary=summary))


def steps(text: str, **ticket: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(s["action"], s["params"]) for s in plan(text, **ticket).as_list()]


def test_ordering_words_move_steps() -> None:
    assert [a for a, _ in steps("reset her password, but verify by sms first")] == [
        "identity.verify_user_mfa",
        "identity.reset_password",
    ]
    assert [a for a, _ in steps("unlock the account; challenge him by phone call before that")] == [
        "identity.verify_user_mfa",
        "identity.unlock_account",
    ]
    assert [a for a, _ in steps("text her 'all set' after resetting her password")] == [
        "identity.reset_password",
        "notify.send_sms",
    ]


def test_several_targets_in_one_clause_are_one_step_each() -> None:
    assert steps("add okoye and mbaku to Wakanda-Council") == [
        ("identity.add_to_group", {"user": "okoye", "group": "Wakanda-Council"}),
        ("identity.add_to_group", {"user": "mbaku", "group": "Wakanda-Council"}),
    ]
    assert steps("reboot BR-SRV-01 and BR-SRV-02") == [
        ("rmm.reboot_device", {"device": "BR-SRV-01"}),
        ("rmm.reboot_device", {"device": "BR-SRV-02"}),
    ]


def test_parameters_come_from_the_instruction_then_earlier_clauses_then_the_ticket() -> None:
    s = plan("put a.ng@zen.io in Design-Team and assign M365_E3; then reboot", requester="lead@zen.io")
    assert s.as_list() == [
        {"action": "identity.add_to_group", "params": {"user": "a.ng@zen.io", "group": "Design-Team"}},
        {"action": "m365.assign_license", "params": {"user": "a.ng@zen.io", "sku": "M365_E3"}},
        {"action": "rmm.reboot_device", "params": {"device": "HQ-LT-204"}},
    ]
    assert s.steps[1].sources["user"] == "previous step" and s.steps[2].sources["device"] == "ticket"
    leaver = steps("disable the account", summary="Leaver: Dev Rao (dev.rao@zen.io) leaves today")
    assert leaver == [("identity.disable_account", {"user": "dev.rao@zen.io"})]


def test_a_default_is_left_out_and_its_opposite_kept() -> None:
    assert steps("reset pw for qchen") == [("identity.reset_password", {"user": "qchen"})]
    assert steps("reset pw for qchen, no need to change it at next logon") == [
        ("identity.reset_password", {"user": "qchen", "must_change_at_next_logon": False})
    ]


def test_typos_and_abbreviations() -> None:
    assert steps("unlcok + rset pasword", requester="zz9") == [
        ("identity.unlock_account", {"user": "zz9"}),
        ("identity.reset_password", {"user": "zz9"}),
    ]


def test_a_missing_parameter_is_a_question_not_a_guess() -> None:
    p = plan("post in the channel that the outage is over", requester="x")
    assert p.steps and p.steps[0].action == "teams.send_message"
    assert "text" in p.steps[0].missing and p.questions
    nobody = plan("reboot the machine", device=None)
    assert nobody.steps[0].missing == ["device"]


def test_no_action_fits_means_an_empty_plan() -> None:
    for text in (
        "order two new monitors for reception",
        "escalate to the network team",
        "what licence does she have?",
        "call him back after lunch",
    ):
        p = plan(text)
        assert p.steps == [] and p.unmatched, text
