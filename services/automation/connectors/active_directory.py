"""On-premises Active Directory over LDAP (ldap3): a simple bind over LDAPS (or StartTLS), as
AD requires for password changes and as Samba requires for any simple bind.

Passwords are set with `unicodePwd` (the quoted password in UTF-16-LE); "must change at next
logon" is `pwdLastSet = 0`; unlock clears `lockoutTime`; disable/enable flips bit 2 of
`userAccountControl`. AD's answers are mapped to error classes: a refused password (policy)
is `weak_password`, bind data 773 `must_change`, 775 `locked`, 533 `disabled`.
"""

from __future__ import annotations

import re
import ssl
from typing import Any, ClassVar

from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError
from ldap3.utils.conv import escape_filter_chars

from libs.common.jsontypes import Int
from services.automation.catalogue import Action, Params
from services.automation.connectors.base import Connector, ConnectorConfig, StepFailed, temporary_password

DISABLED = 0x2
_BIND_DATA = {
    "773": "must_change",
    "775": "locked",
    "533": "disabled",
    "532": "must_change",
    "701": "disabled",
}


class ADConfig(ConnectorConfig):
    host: str
    port: Int = 636
    tls: str = "ldaps"  # "ldaps" or "starttls"
    base_dn: str
    bind_user: str  # e.g. svc-msp@corp.example or a DN
    bind_password: str
    ca_pem: str | None = None  # the DC's CA certificate; without it the system's CAs are used
    server_name: str | None = None  # the name on the DC's certificate, when it differs from host
    timeout_s: Int = 10


class ActiveDirectory(Connector):
    kind: ClassVar[str] = "active_directory"
    config_model: ClassVar[type[ConnectorConfig]] = ADConfig
    actions: ClassVar[frozenset[str]] = frozenset(
        {
            "identity.reset_password",
            "identity.unlock_account",
            "identity.disable_account",
            "identity.enable_account",
            "identity.add_to_group",
            "identity.remove_from_group",
            "identity.revoke_sessions",
            "identity.require_mfa_reregistration",
        }
    )
    config: ADConfig

    def _server(self) -> Server:
        c = self.config
        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_data=c.ca_pem,
            valid_names=[c.server_name] if c.server_name else None,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )
        return Server(c.host, port=c.port, use_ssl=c.tls == "ldaps", tls=tls, connect_timeout=c.timeout_s)

    def _bind(self, user: str, password: str) -> Connection:
        conn = Connection(self._server(), user=user, password=password, receive_timeout=self.config.timeout_s)
        try:
            conn.open()
            if self.config.tls == "starttls":
                conn.start_tls()
            ok = conn.bind()
        except LDAPSocketOpenError as exc:
            raise StepFailed("unavailable", f"cannot reach the domain controller: {exc}") from None
        except LDAPException as exc:
            raise StepFailed("unavailable", f"LDAP error: {exc}") from None
        if not ok:
            message = str(conn.result.get("message", ""))
            data = re.search(r"data ([0-9a-f]+)", message)
            cls = _BIND_DATA.get(data.group(1) if data else "", "auth")
            raise StepFailed(cls, f"bind as {user} refused: {message[:200]}")  # type: ignore[arg-type]
        return conn

    def _admin(self) -> Connection:
        try:
            return self._bind(self.config.bind_user, self.config.bind_password)
        except StepFailed as exc:
            raise StepFailed("auth", f"the connector's account was refused: {exc.message}") from None

    def _find(self, conn: Connection, name: str, *, kind: str = "user") -> tuple[str, dict[str, Any]]:
        value = escape_filter_chars(name)
        if kind == "user":
            local = escape_filter_chars(name.split("@", 1)[0])
            flt = (
                f"(&(objectClass=user)(objectCategory=person)(|(userPrincipalName={value})(mail={value})"
                f"(sAMAccountName={local})))"
            )
            attrs = [
                "userAccountControl",
                "lockoutTime",
                "pwdLastSet",
                "mobile",
                "memberOf",
                "sAMAccountName",
                "userPrincipalName",
            ]
        else:
            flt = f"(&(objectClass=group)(|(cn={value})(sAMAccountName={value})(name={value})))"
            attrs = ["member", "cn"]
        conn.search(self.config.base_dn, flt, SUBTREE, attributes=attrs, size_limit=2)
        entries = conn.entries
        if not entries:
            raise StepFailed("not_found", f"no {kind} {name!r} under {self.config.base_dn}")
        if len(entries) > 1:
            raise StepFailed(
                "invalid_input", f"{name!r} names more than one {kind}; use the full sign-in name"
            )
        entry = entries[0]
        return entry.entry_dn, entry.entry_attributes_as_dict

    def _modify(
        self, conn: Connection, dn: str, changes: dict[str, Any], *, already: tuple[int, ...] = ()
    ) -> bool:
        """True when the change was made, False when the directory says it was already so."""
        ok = conn.modify(dn, changes)
        if ok:
            return True
        result = conn.result
        if result.get("result") in already:
            return False
        message = str(result.get("message", ""))
        description = result.get("description", "")
        if result.get("result") == 19 or "check_password_restrictions" in message or "0000052D" in message:
            raise StepFailed("weak_password", f"the directory's password policy refused it: {message[:200]}")
        if result.get("result") == 50:
            raise StepFailed("permission", f"the connector's account may not change {dn}: {message[:200]}")
        if result.get("result") == 32:
            raise StepFailed("not_found", f"{dn} does not exist: {message[:200]}")
        raise StepFailed(
            "invalid_input", f"the directory refused the change ({description}): {message[:200]}"
        )

    # --- actions ------------------------------------------------------------------------------

    def reset_password(self, p: Params, *, key: str) -> dict[str, Any]:
        password = temporary_password(self.secret, key)
        with self._admin() as conn:
            dn, _ = self._find(conn, p.user)  # type: ignore[attr-defined]
            self._modify(conn, dn, {"unicodePwd": [(MODIFY_REPLACE, [f'"{password}"'.encode("utf-16-le")])]})
            must = bool(p.must_change_at_next_logon)  # type: ignore[attr-defined]
            self._modify(conn, dn, {"pwdLastSet": [(MODIFY_REPLACE, ["0" if must else "-1"])]})
        return {"user": dn, "temporary_password_issued": True, "must_change_at_next_logon": must}

    def unlock_account(self, p: Params, *, key: str) -> dict[str, Any]:
        with self._admin() as conn:
            dn, attrs = self._find(conn, p.user)  # type: ignore[attr-defined]
            was_locked = _locked(attrs)
            self._modify(conn, dn, {"lockoutTime": [(MODIFY_REPLACE, ["0"])]})
        return {"user": dn, "was_locked": was_locked}

    def _flags(self, p: Params, *, disable: bool) -> dict[str, Any]:
        with self._admin() as conn:
            dn, attrs = self._find(conn, p.user)  # type: ignore[attr-defined]
            uac = int(_first(attrs.get("userAccountControl")) or 512)
            new = uac | DISABLED if disable else uac & ~DISABLED
            if new != uac:
                self._modify(conn, dn, {"userAccountControl": [(MODIFY_REPLACE, [str(new)])]})
        return {"user": dn, "changed": new != uac, "enabled": not disable}

    def disable_account(self, p: Params, *, key: str) -> dict[str, Any]:
        return self._flags(p, disable=True)

    def enable_account(self, p: Params, *, key: str) -> dict[str, Any]:
        return self._flags(p, disable=False)

    def add_to_group(self, p: Params, *, key: str) -> dict[str, Any]:
        with self._admin() as conn:
            user, _ = self._find(conn, p.user)  # type: ignore[attr-defined]
            group, _ = self._find(conn, p.group, kind="group")  # type: ignore[attr-defined]
            changed = self._modify(conn, group, {"member": [(MODIFY_ADD, [user])]}, already=(68, 20))
        return {"user": user, "group": group, "changed": changed}

    def remove_from_group(self, p: Params, *, key: str) -> dict[str, Any]:
        with self._admin() as conn:
            user, _ = self._find(conn, p.user)  # type: ignore[attr-defined]
            group, _ = self._find(conn, p.group, kind="group")  # type: ignore[attr-defined]
            changed = self._modify(conn, group, {"member": [(MODIFY_DELETE, [user])]}, already=(16, 53))
        return {"user": user, "group": group, "changed": changed}

    def revoke_sessions(self, p: Params, *, key: str) -> dict[str, Any]:
        raise StepFailed(
            "unsupported",
            "on-premises AD keeps no sign-in sessions to revoke (Kerberos tickets expire on their own); "
            "reset the password or disable the account instead",
        )

    def require_mfa_reregistration(self, p: Params, *, key: str) -> dict[str, Any]:
        raise StepFailed("unsupported", "on-premises AD holds no MFA registrations; the MFA provider does")

    # --- after a crash: is it done? ----------------------------------------------------------------

    def check(self, action: Action, params: Params, param: str) -> bool | None:
        if param not in ("user", "group"):
            return None
        with self._admin() as conn:
            self._find(conn, str(getattr(params, param)), kind=param)
        return True

    def done(self, action: Action, params: Params, *, key: str) -> bool | None:
        p: Any = params
        with self._admin() as conn:
            if action.name == "identity.reset_password":
                dn, _ = self._find(conn, p.user)
                try:
                    self._bind(dn, temporary_password(self.secret, key)).unbind()
                    return True
                except StepFailed as exc:
                    # The password is right but must be changed (or the account is locked): set.
                    return exc.error_class in ("must_change",)
            dn, attrs = self._find(conn, p.user)
            if action.name == "identity.unlock_account":
                return not _locked(attrs)
            if action.name in ("identity.disable_account", "identity.enable_account"):
                disabled = bool(int(_first(attrs.get("userAccountControl")) or 0) & DISABLED)
                return disabled == (action.name == "identity.disable_account")
            if action.name in ("identity.add_to_group", "identity.remove_from_group"):
                group, gattrs = self._find(conn, p.group, kind="group")
                members = {m.lower() for m in gattrs.get("member", [])}
                return (dn.lower() in members) == (action.name == "identity.add_to_group")
        return None

    def phone_of(self, user: str) -> str:
        with self._admin() as conn:
            _, attrs = self._find(conn, user)
        phone = _first(attrs.get("mobile"))
        if not phone:
            raise StepFailed("not_found", f"{user} has no mobile number in the directory")
        return str(phone)

    def check_password(self, user: str, password: str) -> bool:
        """Whether `password` signs `user` in (a fresh bind): used to prove a reset."""
        with self._admin() as conn:
            dn, _ = self._find(conn, user)
        try:
            self._bind(dn, password).unbind()
            return True
        except StepFailed:
            return False


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _locked(attrs: dict[str, Any]) -> bool:
    value = _first(attrs.get("lockoutTime"))
    if value is None:
        return False
    if hasattr(value, "year"):
        return value.year > 1601
    return str(value) not in ("0", "")


__all__ = ["BASE", "ActiveDirectory", "ADConfig"]
