"""The `msp` command's tenant, mapping and key management, on the embedded SQLite default."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.cli.main import main
from libs.common.db import make_engine
from services.ingest import tenants
from services.ingest.tenants import KeyVerifier

pytestmark = pytest.mark.integration


def key_id_bytes(key: str) -> bytes:
    return (tenants.key_id_of(key) or "").encode()


def run(capsys: pytest.CaptureFixture[str], var: Path, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["--var-dir", str(var), *argv])
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_tenants_mappings_and_keys_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, tmp_path, "tenant", "add", "acme", "--name", "Acme Ltd")[0] == 0
    code, _, err = run(capsys, tmp_path, "tenant", "add", "acme")
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, tmp_path, "tenant", "add", "Not Valid")
    assert code == 1 and "invalid tenant id" in err
    assert (
        run(capsys, tmp_path, "tenant", "map", "acme", "--source", "connectwise", "--external-id", "250")[0]
        == 0
    )
    code, out, _ = run(capsys, tmp_path, "tenant", "show", "acme")
    assert '"external_id": "250"' in out

    code, key, err = run(capsys, tmp_path, "key", "issue", "--tenant", "acme", "--label", "rmm")
    key = key.strip()
    assert code == 0 and key.startswith("msp_") and "signing secret" in err
    engine = make_engine(f"sqlite:///{tmp_path / 'db' / 'ingest.db'}")
    assert KeyVerifier(engine).verify(key) is not None
    stored = b"".join(f.read_bytes() for f in (tmp_path / "db").iterdir())  # the db and its WAL
    assert key_id_bytes(key) in stored and key.split("_", 2)[2].encode() not in stored  # kept hashed

    key_id = tenants.key_id_of(key) or ""
    code, out, _ = run(capsys, tmp_path, "key", "list", "--tenant", "acme")
    assert key_id in out and "secret_hash" not in out
    assert run(capsys, tmp_path, "key", "revoke", "--tenant", "acme", "--key-id", key_id)[0] == 0
    assert KeyVerifier(engine, ttl_s=0).verify(key) is None
    assert run(capsys, tmp_path, "key", "revoke", "--tenant", "acme", "--key-id", key_id)[0] == 1
