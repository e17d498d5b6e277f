"""AWS IAM through boto3, with the tenant's own access key (and endpoint, for a region's or a
test's own). "Already so" answers count as done: a user without a console password
(NoSuchEntity on DeleteLoginProfile), a policy not attached (NoSuchEntity on Detach), a key
already inactive.
"""

from __future__ import annotations

from typing import Any, ClassVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from libs.common.jsontypes import Float
from services.automation.catalogue import Action, Params
from services.automation.connectors.base import Connector, ConnectorConfig, StepFailed


class AwsConfig(ConnectorConfig):
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    timeout_s: Float = 10.0


class AwsIam(Connector):
    kind: ClassVar[str] = "aws_iam"
    config_model: ClassVar[type[ConnectorConfig]] = AwsConfig
    actions: ClassVar[frozenset[str]] = frozenset(
        {"aws.deactivate_access_key", "aws.disable_console_login", "aws.attach_policy", "aws.detach_policy"}
    )
    config: AwsConfig

    def __init__(self, config: ConnectorConfig, *, secret: bytes) -> None:
        super().__init__(config, secret=secret)
        c = self.config
        self.iam = boto3.client(
            "iam",
            aws_access_key_id=c.access_key_id,
            aws_secret_access_key=c.secret_access_key,
            region_name=c.region,
            endpoint_url=c.endpoint_url,
            config=Config(
                connect_timeout=c.timeout_s,
                read_timeout=c.timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    def _call(self, name: str, *, already: tuple[str, ...] = (), **kwargs: Any) -> dict[str, Any] | None:
        """The call's answer; None when AWS says it is already so (an error code in `already`)."""
        try:
            result: dict[str, Any] = getattr(self.iam, name)(**kwargs)
            return result
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", str(exc))
            if code in already:
                return None
            if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
                raise StepFailed("permission", f"the connector's AWS key may not {name}: {message}") from None
            if code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken"):
                raise StepFailed("auth", f"AWS refused the connector's key: {message}") from None
            if code == "NoSuchEntity":
                raise StepFailed("not_found", message) from None
            if code in ("Throttling", "ThrottlingException"):
                raise StepFailed("throttled", message) from None
            if code == "LimitExceeded":
                raise StepFailed("invalid_input", f"an IAM quota is reached: {message}") from None
            raise StepFailed("invalid_input", f"{code}: {message}") from None
        except EndpointConnectionError as exc:
            raise StepFailed("unavailable", f"cannot reach AWS IAM: {exc}") from None
        except BotoCoreError as exc:
            raise StepFailed("unavailable", f"AWS call failed: {exc}") from None

    def _policy_arn(self, policy: str) -> str:
        if policy.startswith("arn:"):
            return policy
        aws_managed = f"arn:aws:iam::aws:policy/{policy}"
        if self._call("get_policy", already=("NoSuchEntity",), PolicyArn=aws_managed) is not None:
            return aws_managed
        page = self._call("list_policies", Scope="Local", MaxItems=1000) or {}
        for found in page.get("Policies", []):
            if found["PolicyName"] == policy:
                return str(found["Arn"])
        raise StepFailed("not_found", f"no managed policy named {policy!r} (AWS-managed or this account's)")

    def _user(self, name: str) -> None:
        self._call("get_user", UserName=name)

    def check(self, action: Action, params: Params, param: str) -> bool | None:
        if param != "iam_user":
            return None
        self._user(str(getattr(params, param)))
        return True

    # --- actions -------------------------------------------------------------------------------

    def deactivate_access_key(self, p: Any, *, key: str) -> dict[str, Any]:
        self._user(p.iam_user)
        listed = self._call("list_access_keys", UserName=p.iam_user) or {}
        keys = [k for k in listed.get("AccessKeyMetadata", [])]
        if p.access_key_id:
            keys = [k for k in keys if k["AccessKeyId"] == p.access_key_id]
            if not keys:
                raise StepFailed("not_found", f"{p.iam_user} has no access key {p.access_key_id}")
        changed = []
        for k in keys:
            if k["Status"] != "Inactive":
                self._call(
                    "update_access_key", UserName=p.iam_user, AccessKeyId=k["AccessKeyId"], Status="Inactive"
                )
                changed.append(k["AccessKeyId"])
        return {"iam_user": p.iam_user, "deactivated": changed, "already_inactive": len(keys) - len(changed)}

    def disable_console_login(self, p: Any, *, key: str) -> dict[str, Any]:
        self._user(p.iam_user)
        done = self._call("delete_login_profile", already=("NoSuchEntity",), UserName=p.iam_user)
        return {"iam_user": p.iam_user, "changed": done is not None}

    def attach_policy(self, p: Any, *, key: str) -> dict[str, Any]:
        arn = self._policy_arn(p.policy)
        self._call("attach_user_policy", UserName=p.iam_user, PolicyArn=arn)
        return {"iam_user": p.iam_user, "policy_arn": arn}

    def detach_policy(self, p: Any, *, key: str) -> dict[str, Any]:
        arn = self._policy_arn(p.policy)
        done = self._call("detach_user_policy", already=("NoSuchEntity",), UserName=p.iam_user, PolicyArn=arn)
        return {"iam_user": p.iam_user, "policy_arn": arn, "changed": done is not None}

    def done(self, action: Action, params: Params, *, key: str) -> bool | None:
        p: Any = params
        if action.name in ("aws.attach_policy", "aws.detach_policy"):
            arn = self._policy_arn(p.policy)
            attached = self._call("list_attached_user_policies", UserName=p.iam_user) or {}
            present = any(a["PolicyArn"] == arn for a in attached.get("AttachedPolicies", []))
            return present == (action.name == "aws.attach_policy")
        if action.name == "aws.disable_console_login":
            return self._call("get_login_profile", already=("NoSuchEntity",), UserName=p.iam_user) is None
        if action.name == "aws.deactivate_access_key":
            listed = self._call("list_access_keys", UserName=p.iam_user) or {}
            keys = [
                k
                for k in listed.get("AccessKeyMetadata", [])
                if not p.access_key_id or k["AccessKeyId"] == p.access_key_id
            ]
            return all(k["Status"] == "Inactive" for k in keys)
        return None

    def close(self) -> None:
        self.iam.close()
