"""Each connector against its real peer on loopback: Active Directory against a Samba DC,
AWS IAM against moto, Twilio and Microsoft Graph against Prism serving their published API
descriptions (a request those APIs would reject fails), NinjaOne against a peer that checks
NinjaOne's documented request shapes."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from services.automation.catalogue import get
from services.automation.connectors import KINDS, ToolMapError, connector_for, shown, validate_tool_map
from services.automation.connectors.active_directory import ActiveDirectory, ADConfig
from services.automation.connectors.aws_iam import AwsConfig, AwsIam
from services.automation.connectors.base import StepFailed, temporary_password
from services.automation.connectors.microsoft_graph import GraphConfig, MicrosoftGraph
from services.automation.connectors.ninjaone import NinjaOne, NinjaOneConfig
from services.automation.connectors.twilio import NeedsCode, Twilio, TwilioConfig
from tests.conftest import unique
from tests.peers import DomainController, Moto, Prism, start_moto

SECRET = b"s" * 32


def run(connector: Any, name: str, key: str = "k-1", **params: Any) -> dict[str, Any]:
    action = get(name)
    assert action is not None
    return connector.run(action, action.validate(params), key=key)  # type: ignore[no-any-return]


def done(connector: Any, name: str, key: str = "k-1", **params: Any) -> bool | None:
    action = get(name)
    assert action is not None
    return connector.done(action, action.validate(params), key=key)  # type: ignore[no-any-return]


def ad(dc: DomainController, **over: Any) -> ActiveDirectory:
    settings = {k: v for k, v in dc.tool().items() if k != "kind"}
    return ActiveDirectory(ADConfig(**{**settings, **over}), secret=SECRET)


# --- Active Directory (Samba) -----------------------------------------------------------------------


def test_a_password_reset_is_proved_by_a_fresh_bind_with_the_new_password(dc: DomainController) -> None:
    dc.add_user("mgarcia", "Old-Passw0rd!")
    c = ad(dc)
    answer = run(
        c, "identity.reset_password", key="run1-step0", user="mgarcia", must_change_at_next_logon=False
    )
    assert answer["temporary_password_issued"] and "Tmp-" not in json.dumps(answer), (
        "no password in the answer"
    )
    new = temporary_password(SECRET, "run1-step0")
    assert dc.bind("mgarcia", new) == (True, "")
    assert dc.bind("mgarcia", "Old-Passw0rd!")[0] is False
    assert done(c, "identity.reset_password", key="run1-step0", user="mgarcia") is True
    assert done(c, "identity.reset_password", key="another-step", user="mgarcia") is False


def test_must_change_at_next_logon_is_what_ad_then_says(dc: DomainController) -> None:
    dc.add_user("jbarnes")
    c = ad(dc)
    run(c, "identity.reset_password", key="r2", user="jbarnes@corp.test")  # the default: must change
    assert dc.bind("jbarnes", temporary_password(SECRET, "r2")) == (False, "773")
    assert done(c, "identity.reset_password", key="r2", user="jbarnes") is True


def test_a_password_the_domain_policy_refuses_is_weak_password(dc: DomainController) -> None:
    dc.add_user("weak1")
    # A fine-grained password policy for this user asking for 30 characters.
    dc.samba_tool("domain", "passwordsettings", "pso", "create", "longpw", "1", "--min-pwd-length=30")
    dc.samba_tool("domain", "passwordsettings", "pso", "apply", "longpw", "weak1")
    with pytest.raises(StepFailed) as failed:
        run(ad(dc), "identity.reset_password", user="weak1")
    assert failed.value.error_class == "weak_password"


def test_unlock_clears_a_real_lockout(dc: DomainController) -> None:
    dc.add_user("cbrown", "Right-Passw0rd!")
    for _ in range(3):
        assert dc.bind("cbrown", "wrong-password")[0] is False
    assert dc.bind("cbrown", "Right-Passw0rd!") == (False, "775"), "three wrong passwords lock the account"
    c = ad(dc)
    assert done(c, "identity.unlock_account", user="cbrown") is False
    assert run(c, "identity.unlock_account", user="cbrown")["was_locked"] is True
    assert dc.bind("cbrown", "Right-Passw0rd!") == (True, "")
    assert done(c, "identity.unlock_account", user="cbrown") is True


def test_disable_and_enable(dc: DomainController) -> None:
    dc.add_user("sortiz", "Right-Passw0rd!")
    c = ad(dc)
    run(c, "identity.disable_account", user="sortiz")
    assert dc.bind("sortiz", "Right-Passw0rd!") == (False, "533")
    assert done(c, "identity.disable_account", user="sortiz") is True
    assert run(c, "identity.disable_account", user="sortiz")["changed"] is False, (
        "disabling twice changes nothing"
    )
    run(c, "identity.enable_account", user="sortiz")
    assert dc.bind("sortiz", "Right-Passw0rd!") == (True, "")


def test_group_membership_and_its_already_so_answers(dc: DomainController) -> None:
    user = dc.add_user("rkhan")
    dc.add_group("Finance-RW")
    c = ad(dc)
    assert run(c, "identity.add_to_group", user="rkhan", group="Finance-RW")["changed"] is True
    assert run(c, "identity.add_to_group", user="rkhan", group="Finance-RW")["changed"] is False
    assert [m.lower() for m in dc.members("Finance-RW")] == [user.lower()]
    assert done(c, "identity.add_to_group", user="rkhan", group="Finance-RW") is True
    assert run(c, "identity.remove_from_group", user="rkhan", group="Finance-RW")["changed"] is True
    assert run(c, "identity.remove_from_group", user="rkhan", group="Finance-RW")["changed"] is False
    assert dc.members("Finance-RW") == []


def test_clear_outcomes_for_what_ad_cannot_do_or_find(dc: DomainController) -> None:
    c = ad(dc)
    with pytest.raises(StepFailed) as nobody:
        run(c, "identity.unlock_account", user="nobody")
    assert nobody.value.error_class == "not_found"
    dc.add_user("lmartin")
    with pytest.raises(StepFailed) as group:
        run(c, "identity.add_to_group", user="lmartin", group="No-Such-Group")
    assert group.value.error_class == "not_found"
    with pytest.raises(StepFailed) as sessions:
        run(c, "identity.revoke_sessions", user="lmartin")
    assert sessions.value.error_class == "unsupported"
    with pytest.raises(StepFailed) as refused:
        run(ad(dc, bind_password="not-the-password"), "identity.unlock_account", user="lmartin")
    assert refused.value.error_class == "auth"


def test_two_tenants_dcs_side_by_side_see_only_their_own_users(dc: DomainController, peers_dir: Any) -> None:
    from tests.peers import start_dc

    other = start_dc(peers_dir)
    try:
        other.add_user("tenantb-user", "B-Passw0rd-123!")
        assert other.host != dc.host
        with pytest.raises(StepFailed) as failed:
            run(ad(dc), "identity.reset_password", user="tenantb-user")
        assert failed.value.error_class == "not_found"
        assert other.bind("tenantb-user", "B-Passw0rd-123!") == (True, "")
    finally:
        other.stop()


# --- AWS IAM (moto) ----------------------------------------------------------------------------------


def iam(moto: Moto) -> Any:
    return boto3.client(
        "iam",
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def test_aws_actions_and_their_already_done_answers(moto: Moto) -> None:
    user = unique("ci-runner")
    client = iam(moto)
    client.create_user(UserName=user)
    key = client.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    client.create_login_profile(UserName=user, Password="Console-Passw0rd-1!")
    client.attach_user_policy(UserName=user, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    c = AwsIam(
        AwsConfig(access_key_id="testing", secret_access_key="testing", endpoint_url=moto.url), secret=b""
    )

    assert run(c, "aws.deactivate_access_key", iam_user=user, access_key_id=key)["deactivated"] == [key]
    assert client.list_access_keys(UserName=user)["AccessKeyMetadata"][0]["Status"] == "Inactive"
    assert run(c, "aws.deactivate_access_key", iam_user=user)["already_inactive"] == 1
    assert run(c, "aws.disable_console_login", iam_user=user)["changed"] is True
    assert run(c, "aws.disable_console_login", iam_user=user)["changed"] is False, "NoSuchEntity: already so"
    assert run(c, "aws.detach_policy", iam_user=user, policy="AdministratorAccess")["changed"] is True
    assert run(c, "aws.detach_policy", iam_user=user, policy="AdministratorAccess")["changed"] is False
    run(c, "aws.attach_policy", iam_user=user, policy="SecurityAudit")
    attached = [
        p["PolicyName"] for p in client.list_attached_user_policies(UserName=user)["AttachedPolicies"]
    ]
    assert attached == ["SecurityAudit"]
    for name, params in [
        ("aws.attach_policy", {"policy": "SecurityAudit"}),
        ("aws.detach_policy", {"policy": "AdministratorAccess"}),
        ("aws.disable_console_login", {}),
        ("aws.deactivate_access_key", {}),
    ]:
        assert done(c, name, iam_user=user, **params) is True, name
    with pytest.raises(StepFailed) as missing:
        run(c, "aws.attach_policy", iam_user=user, policy="NoSuchPolicyAnywhere")
    assert missing.value.error_class == "not_found"


def test_a_connector_key_limited_to_some_actions_cannot_run_others(peers_dir: Any) -> None:
    """moto checks permissions once its first actions (the set-up) are done."""
    guarded = start_moto(peers_dir, auth_after=6)
    try:
        admin = iam(guarded)
        admin.create_user(UserName="connector")  # 1
        admin.put_user_policy(  # 2
            UserName="connector",
            PolicyName="keys-only",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["iam:GetUser", "iam:ListAccessKeys", "iam:UpdateAccessKey"],
                            "Resource": "*",
                        }
                    ],
                }
            ),
        )
        creds = admin.create_access_key(UserName="connector")["AccessKey"]  # 3
        admin.create_user(UserName="leaky")  # 4
        leaked = admin.create_access_key(UserName="leaky")["AccessKey"]["AccessKeyId"]  # 5
        c = AwsIam(
            AwsConfig(
                access_key_id=creds["AccessKeyId"],
                secret_access_key=creds["SecretAccessKey"],
                endpoint_url=guarded.url,
            ),
            secret=b"",
        )
        assert run(c, "aws.deactivate_access_key", iam_user="leaky")["deactivated"] == [leaked]
        with pytest.raises(StepFailed) as refused:
            run(
                c, "aws.attach_policy", iam_user="leaky", policy="arn:aws:iam::aws:policy/AdministratorAccess"
            )
        assert refused.value.error_class == "permission"
    finally:
        guarded.stop()


# --- Twilio (Prism serving Twilio's descriptions) ------------------------------------------------------


def twilio(peers: tuple[Prism, Prism], phone: str = "+15551234567") -> Twilio:
    messages, verify = peers
    config = TwilioConfig(
        account_sid="AC" + "0" * 32,
        auth_token="token",
        from_number="+15557654321",
        verify_service_sid="VA" + "0" * 32,
        api_base_url=messages.url,
        verify_base_url=verify.url,
    )
    return Twilio(config, secret=b"", phone_of=lambda user: phone)


def validation_errors(prism: Prism) -> list[str]:
    """What Prism found wrong with the requests it got (it also checks its own example
    answers against the description; those lines are about the mock, not the client)."""
    return [
        line
        for line in prism.log.read_text().splitlines()
        if "✖" in line and "Violation: response" not in line and "Request terminated" not in line
    ]


def test_sms_and_an_mfa_challenge_are_requests_twilio_accepts(twilio_peers: tuple[Prism, Prism]) -> None:
    before = [len(validation_errors(p)) for p in twilio_peers]
    c = twilio(twilio_peers)
    sent = run(c, "notify.send_sms", user="mgarcia", text="Your account is unlocked")
    assert sent["message_sid"].startswith("SM")
    with pytest.raises(NeedsCode) as waiting:
        run(c, "identity.verify_user_mfa", user="mgarcia", method="sms")
    assert waiting.value.response["status"] == "pending"
    action = get("identity.verify_user_mfa")
    assert action is not None
    checked = c.check_code(action.validate({"user": "mgarcia", "method": "call"}), "123456")
    assert checked["status"] == "approved"
    assert [len(validation_errors(p)) for p in twilio_peers] == before, "Prism found a request Twilio rejects"
    with pytest.raises(StepFailed) as push:
        run(c, "identity.verify_user_mfa", user="mgarcia", method="push")
    assert push.value.error_class == "unsupported"


def test_the_peer_rejects_what_twilio_rejects_and_no_number_is_a_clear_outcome(
    twilio_peers: tuple[Prism, Prism],
) -> None:
    import httpx

    account = "AC" + "0" * 32
    r = httpx.post(
        f"{twilio_peers[0].url}/2010-04-01/Accounts/{account}/Messages.json",
        data={"Body": "x"},
        auth=(account, "token"),
    )
    assert r.status_code == 422, "the mock checks requests against Twilio's description (To is required)"
    with pytest.raises(StepFailed) as failed:
        run(twilio(twilio_peers, phone="555-0100"), "notify.send_sms", user="mgarcia", text="hello")
    assert failed.value.error_class == "invalid_input" and "E.164" in failed.value.message


# --- Microsoft Graph (Prism serving Graph's description) ------------------------------------------------


def graph_connector(graph: Prism, **over: Any) -> MicrosoftGraph:
    config = GraphConfig(
        base_url=f"{graph.url}/v1.0",
        token="test-token",
        team_id="team-1",
        skus={"M365_BUSINESS_PREMIUM": "cbdc14ab-d96c-4c30-b9f4-6ada7cdc1d46"},
        **over,
    )
    return MicrosoftGraph(config, secret=SECRET)


@pytest.mark.parametrize(
    "name,params",
    [
        ("identity.reset_password", {"user": "ann@corp.test"}),
        ("identity.disable_account", {"user": "ann@corp.test"}),
        ("identity.enable_account", {"user": "ann@corp.test"}),
        ("identity.revoke_sessions", {"user": "ann@corp.test"}),
        ("identity.require_mfa_reregistration", {"user": "ann@corp.test"}),
        ("identity.add_to_group", {"user": "ann@corp.test", "group": "VPN-Users"}),
        ("identity.remove_from_group", {"user": "ann@corp.test", "group": "VPN-Users"}),
        ("m365.assign_license", {"user": "ann@corp.test", "sku": "M365_BUSINESS_PREMIUM"}),
        ("m365.set_auto_reply", {"user": "ann@corp.test", "message": "Out until Monday"}),
        ("teams.send_message", {"to": "#it-ops", "text": "FS01 rebooted"}),
        ("teams.send_message", {"to": "ann@corp.test", "text": "Your laptop is ready"}),
    ],
)
def test_graph_requests_pass_graphs_own_schema(graph: Prism, name: str, params: dict[str, Any]) -> None:
    before = len(validation_errors(graph))
    c = graph_connector(graph)
    answer = run(c, name, **params)
    assert answer, name
    assert len(validation_errors(graph)) == before, validation_errors(graph)[before:]


def test_graph_errors_map_to_clear_outcomes(graph: Prism) -> None:
    c = graph_connector(graph, max_retry_after_s=1.0)
    c.http.headers["Prefer"] = "code=404"  # ask the mock for the description's error answer
    with pytest.raises(StepFailed) as missing:
        run(c, "identity.disable_account", user="nobody@corp.test")
    assert missing.value.error_class == "not_found"
    c.http.headers["Prefer"] = "code=429"
    with pytest.raises(StepFailed) as throttled:
        run(c, "identity.revoke_sessions", user="ann@corp.test")
    assert throttled.value.error_class == "throttled"
    with pytest.raises(StepFailed) as unlock:
        run(graph_connector(graph), "identity.unlock_account", user="ann@corp.test")
    assert unlock.value.error_class == "unsupported"
    with pytest.raises(StepFailed) as mailbox:
        run(
            graph_connector(graph),
            "m365.grant_mailbox_access",
            mailbox="info@corp.test",
            user="ann@corp.test",
            rights="SendAs",
        )
    assert mailbox.value.error_class == "unsupported"


# --- NinjaOne ----------------------------------------------------------------------------------------------


def test_rmm_actions_send_what_ninjaone_documents(ninjaone: Any) -> None:
    config = NinjaOneConfig(**{k: v for k, v in ninjaone.tool().items() if k != "kind"})
    c = NinjaOne(config, secret=b"")
    assert run(c, "rmm.run_script", device="ACME-LT-042", script="flush_dns")["script_id"] == 11
    assert run(c, "rmm.restart_service", device="PRN-SRV01", service="spooler")["service"] == "Spooler"
    assert run(c, "rmm.reboot_device", device="SQL01")["device_id"] == 103
    assert ninjaone.refused == []
    posted = [(m, p, b) for m, p, b in ninjaone.calls if m == "POST"]
    assert posted == [
        (
            "POST",
            "/v2/device/101/script/run",
            {"type": "SCRIPT", "id": 11, "parameters": "", "runAs": "system"},
        ),
        ("POST", "/v2/device/102/windows-service/Spooler/control", {"action": "RESTART"}),
        ("POST", "/v2/device/103/reboot/NORMAL", {"reason": posted[2][2]["reason"]}),
    ]
    for name, params, cls in [
        ("rmm.reboot_device", {"device": "NO-SUCH-PC"}, "not_found"),
        ("rmm.run_script", {"device": "ACME-LT-042", "script": "format_c"}, "not_found"),
    ]:
        with pytest.raises(StepFailed) as failed:
            run(c, name, **params)
        assert failed.value.error_class == cls
    bad = NinjaOne(NinjaOneConfig(**{**config.model_dump(), "client_secret": "wrong"}), secret=b"")
    with pytest.raises(StepFailed) as refused:
        run(bad, "rmm.reboot_device", device="SQL01")
    assert refused.value.error_class == "auth"


# --- tool maps ---------------------------------------------------------------------------------------


def test_a_tool_map_picks_the_connector_per_tenant_and_never_shows_credentials(dc: DomainController) -> None:
    entra = validate_tool_map({"identity": {"kind": "microsoft_graph", "token": "t0k3n"}})
    on_prem = validate_tool_map({"identity": dc.tool()})
    assert type(connector_for(entra, "identity", secret=b"")) is KINDS["microsoft_graph"]
    assert type(connector_for(on_prem, "identity", secret=b"")) is KINDS["active_directory"]
    assert "t0k3n" not in json.dumps(shown(entra)) and dc.password not in json.dumps(shown(on_prem))
    for bad, says in [
        ({"printers": {"kind": "x"}}, "unknown system"),
        ({"identity": {"kind": "aws_iam"}}, "cannot serve"),
        ({"aws": {"kind": "aws_iam"}}, "access_key_id"),
    ]:
        with pytest.raises(ToolMapError, match=says):
            validate_tool_map(bad)
    with pytest.raises(StepFailed) as missing:
        connector_for(entra, "rmm", secret=b"")
    assert missing.value.error_class == "not_configured"


def test_the_same_rmm_actions_through_datto_rmm() -> None:
    import uuid

    from services.automation.connectors.datto_rmm import DattoConfig, DattoRmm
    from tests.peers.datto import DattoPeer

    peer = DattoPeer(
        devices={"ACME-LT-042": str(uuid.uuid4()), "PRN-SRV01": str(uuid.uuid4())},
        components={
            "flush_dns": str(uuid.uuid4()),
            "Restart Service": str(uuid.uuid4()),
            "Reboot Device": str(uuid.uuid4()),
        },
    ).start()
    try:
        c = DattoRmm(DattoConfig(**{k: v for k, v in peer.tool().items() if k != "kind"}), secret=b"")
        assert run(c, "rmm.run_script", device="ACME-LT-042", script="flush_dns")["job_uid"]
        run(c, "rmm.restart_service", device="PRN-SRV01", service="Spooler")
        run(c, "rmm.reboot_device", device="PRN-SRV01")
        assert peer.refused == []
        jobs = [b for m, _, b in peer.calls if m == "PUT"]
        assert [j["jobComponent"]["componentUid"] for j in jobs] == [
            peer.components["flush_dns"],
            peer.components["Restart Service"],
            peer.components["Reboot Device"],
        ]
        assert jobs[1]["jobComponent"]["variables"] == [{"name": "service", "value": "Spooler"}]
        with pytest.raises(StepFailed) as missing:
            run(c, "rmm.run_script", device="ACME-LT-042", script="format_c")
        assert missing.value.error_class == "not_found"
    finally:
        peer.stop()
