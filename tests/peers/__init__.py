"""The real systems the connectors talk to, started on loopback for tests:

- a Samba Active Directory domain controller per tenant (Debian's samba packages), provisioned
  once into a template folder and copied for each DC, each on its own loopback address;
- `moto` in server mode for AWS IAM;
- Stoplight Prism serving Twilio's published descriptions (Messages, Verify) and the part of
  Microsoft Graph's description the connectors use (graph_description.py);
- a NinjaOne API peer (ninjaone.py) that checks requests against NinjaOne's documented shapes.

Each start waits for a positive signal (the port answers), never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli.debian import ensure_packages
from cli.processes import free_port
from libs.common.settings import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "data" / "apis"
WORK = REPO_ROOT / "var" / "peers"
NPM = Path(__file__).parent / "npm"
SAMBA_PACKAGES = [
    "samba",
    "samba-ad-dc",
    "samba-ad-provision",
    "samba-dsdb-modules",
    "winbind",
    "ldb-tools",
    "krb5-user",
]
ADMIN_PASSWORD = "Adm1n-Passw0rd!"


def wait_port(
    host: str, port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(
        f"{what} did not listen on {host}:{port} within {timeout_s} s:\n{log.read_text()[-3000:]}"
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


# --- Samba AD ----------------------------------------------------------------------------------


@dataclass
class DomainController:
    host: str
    folder: Path
    proc: subprocess.Popen[bytes]
    realm: str = "CORP.TEST"
    base_dn: str = "DC=corp,DC=test"
    admin: str = "Administrator@corp.test"
    password: str = ADMIN_PASSWORD
    server_name: str = "DC1.corp.test"

    @property
    def ca_pem(self) -> str:
        return (self.folder / "private" / "tls" / "ca.pem").read_text()

    def tool(self) -> dict[str, object]:
        """This DC as a tenant's `identity` tool map entry."""
        return {
            "kind": "active_directory",
            "host": self.host,
            "port": 636,
            "base_dn": self.base_dn,
            "bind_user": self.admin,
            "bind_password": self.password,
            "ca_pem": self.ca_pem,
            "server_name": self.server_name,
        }

    def stop(self) -> None:
        stop(self.proc)

    # Setting a test's directory up and looking at it, over LDAP as any client would.

    def _conn(self, user: str | None = None, password: str | None = None):  # type: ignore[no-untyped-def]
        import ssl

        from ldap3 import Connection, Server, Tls

        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_data=self.ca_pem, valid_names=[self.server_name])
        server = Server(self.host, port=636, use_ssl=True, tls=tls, connect_timeout=5)
        return Connection(server, user=user or self.admin, password=password or self.password)

    def add_user(self, login: str, password: str = "Start-Passw0rd!", *, mobile: str | None = None) -> str:
        from ldap3 import MODIFY_REPLACE

        dn = f"CN={login},CN=Users,{self.base_dn}"
        with self._conn() as c:
            attrs = {"sAMAccountName": login, "userPrincipalName": f"{login}@corp.test"}
            if mobile:
                attrs["mobile"] = mobile
            assert c.add(dn, ["top", "person", "organizationalPerson", "user"], attrs), c.result
            assert c.modify(dn, {"unicodePwd": [(MODIFY_REPLACE, [f'"{password}"'.encode("utf-16-le")])]}), (
                c.result
            )
            assert c.modify(dn, {"userAccountControl": [(MODIFY_REPLACE, ["512"])]}), c.result
        return dn

    def add_group(self, name: str) -> str:
        dn = f"CN={name},CN=Users,{self.base_dn}"
        with self._conn() as c:
            assert c.add(dn, ["top", "group"], {"sAMAccountName": name}), c.result
        return dn

    def bind(self, login: str, password: str) -> tuple[bool, str]:
        """(signed in, AD's reason code when not: 52e wrong password, 773 must change, 775
        locked, 533 disabled)."""
        import re

        c = self._conn(f"{login}@corp.test", password)
        try:
            ok = c.bind()
            message = str(c.result.get("message", ""))
        finally:
            c.unbind()
        code = re.search(r"data ([0-9a-f]+)", message)
        return ok, code.group(1) if code else ""

    def members(self, group: str) -> list[str]:
        with self._conn() as c:
            c.search(self.base_dn, f"(&(objectClass=group)(cn={group}))", attributes=["member"])
            return [str(m) for m in c.entries[0].entry_attributes_as_dict.get("member", [])]

    def samba_tool(self, *args: str) -> None:
        subprocess.run(
            ["samba-tool", *args, "-s", str(self.folder / "etc" / "smb.conf")],
            check=True,
            capture_output=True,
        )


def _samba_template() -> Path:
    """A provisioned domain (with its TLS keys made), kept under var/peers and reused."""
    template = WORK / "samba-template"
    if (template / "ready").exists():
        return template
    ensure_packages(SAMBA_PACKAGES, binary="samba-tool")
    shutil.rmtree(template, ignore_errors=True)
    template.mkdir(parents=True)
    subprocess.run(
        [
            "samba-tool",
            "domain",
            "provision",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--realm=CORP.TEST",
            "--domain=CORP",
            f"--adminpass={ADMIN_PASSWORD}",
            f"--targetdir={template}",
            "--host-name=DC1",
            "--option=interfaces=127.0.0.1/8",
            "--option=bind interfaces only=yes",
        ],
        check=True,
        capture_output=True,
    )
    # Lock an account after three wrong passwords (to test unlocking), and no password history or
    # minimum age in the way of repeated resets.
    subprocess.run(
        [
            "samba-tool",
            "domain",
            "passwordsettings",
            "set",
            "--account-lockout-threshold=3",
            "--history-length=0",
            "--min-pwd-age=0",
            "-s",
            str(template / "etc" / "smb.conf"),
        ],
        check=True,
        capture_output=True,
    )
    # Start it once so it makes its TLS keys; every copy then shares them.
    dc = _start_dc(template, "127.0.0.1", copy=False)
    dc.stop()
    (template / "ready").write_text("ok")
    return template


def _start_dc(folder: Path, host: str, *, copy: bool = True) -> DomainController:
    conf = folder / "etc" / "smb.conf"
    text = conf.read_text()
    lines = []
    for line in text.splitlines():
        key = line.strip().split("=", 1)[0].strip()
        if key in ("interfaces", "server services", "pid directory", "log file", "logging", "tls enabled"):
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = text.replace(
        "[global]",
        "\n".join(
            [
                "[global]",
                f"\tinterfaces = {host}/8",
                "\tserver services = ldap, kdc",
                f"\tpid directory = {folder / 'pid'}",
                f"\tlog file = {folder / 'log.%m'}",
                "\tlogging = file",
                "\ttls enabled = yes",
            ]
        ),
        1,
    )
    conf.write_text(text + "\n")
    (folder / "pid").mkdir(exist_ok=True)
    log = folder / "samba.log"
    # In the foreground (-i) it stops when its stdin closes: the pipe stays open while it runs.
    proc = subprocess.Popen(
        ["samba", "-s", str(conf), "-M", "single", "-i", "--debug-stdout"],
        stdin=subprocess.PIPE,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_port(host, 636, proc, f"samba DC on {host}", log)
    return DomainController(host=host, folder=folder, proc=proc)


_next_host = iter(range(2, 250))


def _sockets(directory: str, names: list[str]) -> list[str]:
    """What a running DC left behind that is not data: its sockets and pid files."""
    import stat

    skip = [n for n in names if n in ("msg.sock", "pid") or n.endswith(".pid")]
    for n in names:
        try:
            if stat.S_ISSOCK(os.lstat(os.path.join(directory, n)).st_mode):
                skip.append(n)
        except OSError:
            skip.append(n)
    return skip


def start_dc(where: Path) -> DomainController:
    """A fresh DC of its own (a copy of the template) on a loopback address of its own."""
    template = _samba_template()
    host = f"127.0.{os.getpid() % 200 + 10}.{next(_next_host)}"
    folder = where / f"dc-{host}"
    shutil.copytree(template, folder, symlinks=True, ignore=_sockets)
    old = str(template)
    for path in (folder / "etc" / "smb.conf",):
        path.write_text(path.read_text().replace(old, str(folder)))
    return _start_dc(folder, host)


# --- moto (AWS) ------------------------------------------------------------------------------------


@dataclass
class Moto:
    url: str
    proc: subprocess.Popen[bytes]

    def reset(self) -> None:
        import httpx

        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def tool(self, access_key_id: str = "testing", secret_access_key: str = "testing") -> dict[str, object]:
        return {
            "kind": "aws_iam",
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "endpoint_url": self.url,
        }

    def stop(self) -> None:
        stop(self.proc)


def start_moto(where: Path, *, auth_after: int | None = None) -> Moto:
    port = free_port()
    log = where / f"moto-{port}.log"
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    if auth_after is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_after)
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    wait_port("127.0.0.1", port, proc, "moto", log)
    return Moto(url=f"http://127.0.0.1:{port}", proc=proc)


# --- Prism (Twilio, Microsoft Graph) -----------------------------------------------------------------


def npm_bin() -> Path:
    bin_dir = NPM / "node_modules" / ".bin"
    if not (bin_dir / "prism").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NPM,
            check=True,
            capture_output=True,
        )
    return bin_dir


@dataclass
class Prism:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path = field(default_factory=Path)

    def stop(self) -> None:
        stop(self.proc)


def start_prism(spec: Path, where: Path) -> Prism:
    port = free_port()
    log = where / f"prism-{spec.stem}-{port}.log"
    proc = subprocess.Popen(
        [str(npm_bin() / "prism"), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_port("127.0.0.1", port, proc, f"prism ({spec.name})", log, timeout_s=120)
    return Prism(url=f"http://127.0.0.1:{port}", proc=proc, log=log)


def graph_spec() -> Path:
    from tests.peers.graph_description import build

    return build(SHARED / "msgraph" / "v1.0-Prod.csdl", WORK / "graph", npm_bin())


def twilio_specs() -> tuple[Path, Path]:
    return SHARED / "twilio" / "twilio_api_v2010.json", SHARED / "twilio" / "twilio_verify_v2.json"


def prism_requests(prism: Prism) -> list[str]:
    """The requests Prism logged, with its verdict on each (for asserting a request passed its
    schema)."""
    return [
        line for line in prism.log.read_text().splitlines() if "[HTTP SERVER]" in line or "VALIDATOR" in line
    ]
