"""The `msp` command's tenant, mapping and key management: a real command against a real ingest
process (on the embedded SQLite default), through ingest's admin API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.common.db import make_engine
from libs.common.settings import REPO_ROOT
from services.ingest import tenants
from services.ingest.tenants import KeyVerifier
from tests.processes import spawn_service, wait_ready

pytestmark = pytest.mark.integration
OPERATOR = "c" * 40


@pytest.fixture(scope="module")
def ingest(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    var = tmp_path_factory.mktemp("cli-var")
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MSP_ADMIN_TOKEN": OPERATOR, "MSP_VAR_DIR": str(var)}
    proc, url = spawn_service("ingest", env, var / "ingest.log")
    try:
        wait_ready({"ingest": (proc, url, var / "ingest.log")})
        yield url, var
    finally:
        proc.kill()
        proc.wait()


def msp(ingest: tuple[str, Path], *argv: str, token: str = OPERATOR) -> tuple[int, str, str]:
    url, var = ingest
    where = ["--ingest-url", url] if argv and argv[0] in ("tenant", "key") else []
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "--var-dir", str(var), *argv, *where],
        cwd=REPO_ROOT,
        env={**os.environ, "MSP_ADMIN_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def test_tenants_mappings_and_keys_from_the_command_line(ingest: tuple[str, Path]) -> None:
    _, var = ingest
    assert msp(ingest, "tenant", "add", "acme", "--name", "Acme Ltd")[0] == 0
    code, _, err = msp(ingest, "tenant", "add", "acme")
    assert code == 1 and "already exists" in err
    code, _, err = msp(ingest, "tenant", "add", "Not Valid")
    assert code == 1 and "422" in err and "tenant_id" in err
    assert msp(ingest, "tenant", "map", "acme", "--source", "connectwise", "--external-id", "250")[0] == 0
    code, out, _ = msp(ingest, "tenant", "show", "acme")
    assert '"external_id": "250"' in out

    code, key, err = msp(ingest, "key", "issue", "--tenant", "acme", "--label", "rmm")
    key = key.strip()
    assert code == 0 and key.startswith("msp_") and "signing secret" in err
    engine = make_engine(f"sqlite:///{var / 'db' / 'ingest.db'}")
    assert KeyVerifier(engine).verify(key) is not None
    stored = b"".join(f.read_bytes() for f in (var / "db").iterdir())  # the db and its WAL
    key_id = tenants.key_id_of(key) or ""
    assert key_id.encode() in stored and key.split("_", 2)[2].encode() not in stored  # kept hashed

    code, out, _ = msp(ingest, "key", "list", "--tenant", "acme")
    assert code == 0 and key_id in out and "secret_hash" not in out
    assert msp(ingest, "key", "revoke", "--tenant", "acme", "--key-id", key_id)[0] == 0
    assert KeyVerifier(engine, ttl_s=0).verify(key) is None
    code, out, _ = msp(ingest, "key", "revoke", "--tenant", "acme", "--key-id", key_id)
    assert code == 1 and "no active key" in out
    engine.dispose()


def test_the_command_says_what_is_wrong_when_ingest_refuses_or_is_absent(ingest: tuple[str, Path]) -> None:
    code, _, err = msp(ingest, "key", "list", "--tenant", "acme", token="not-the-token")
    assert code == 1 and "401" in err
    url, var = ingest
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "--var-dir",
            str(var),
            "key",
            "list",
            "--tenant",
            "acme",
            "--ingest-url",
            "http://127.0.0.1:9",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        done.returncode == 1 and "cannot reach http://127.0.0.1:9" in done.stderr and "msp up" in done.stderr
    )
