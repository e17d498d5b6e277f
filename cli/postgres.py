"""A private PostgreSQL server on loopback for the tests, from Debian's packages.

Installs the `postgresql` package when no server binaries are found, creates a cluster in a
temporary folder owned by the `postgres` user (the server refuses to run as root), and starts
it on a port of its own with trust authentication on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresError(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"[postgres] {msg}", file=sys.stderr, flush=True)


def _bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def ensure_installed() -> Path:
    bindir = _bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0:
        raise PostgresError(
            "PostgreSQL is not installed and installing it needs root: apt-get install postgresql"
        )
    _log("installing PostgreSQL from Debian packages ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PostgresError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    bindir = _bindir()
    if bindir is None:
        raise PostgresError("postgresql installed but no initdb/pg_ctl found")
    return bindir


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def data_dir(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"msp-postgres-{port}"


def is_ready(bindir: Path, port: int) -> bool:
    proc = subprocess.run(
        [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
    )
    return proc.returncode == 0


def running(port: int = 55432) -> bool:
    """Whether the project's test server answers on `port` (False when PostgreSQL is absent)."""
    bindir = _bindir()
    return bindir is not None and is_ready(bindir, port)


def start(port: int = 55432, *, durable: bool = False) -> str:
    """Start (or reuse) the test server; returns a SQLAlchemy URL of its `postgres` database.
    Test servers skip fsync for speed; `durable` keeps it (a crash test must not lose what the
    server acknowledged)."""
    bindir = ensure_installed()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    if is_ready(bindir, port):
        return url
    data = data_dir(port)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        proc = subprocess.run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise PostgresError(f"initdb failed:\n{proc.stdout}{proc.stderr}")
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data} "
        "-c max_connections=200"
    )
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    proc = subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(data / "server.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        log = (
            (data / "server.log").read_text(errors="replace")[-2000:]
            if (data / "server.log").exists()
            else ""
        )
        raise PostgresError(f"pg_ctl start failed:\n{proc.stdout}{proc.stderr}\n{log}")
    for _ in range(60):
        if is_ready(bindir, port):
            _log(f"PostgreSQL ready at 127.0.0.1:{port}")
            return url
        time.sleep(0.5)
    raise PostgresError(f"PostgreSQL on port {port} did not become ready")


def stop(port: int = 55432, mode: str = "fast") -> None:
    """Stop the server: `fast` (the default) or `immediate` (as a crash would: no checkpoint)."""
    bindir = _bindir()
    data = data_dir(port)
    if bindir is None or not (data / "postmaster.pid").exists():
        return
    subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"]),
        capture_output=True,
    )


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A fresh database on the project's server (or `MSP_TEST_DATABASE_URL`'s), dropped after:
    yields its URL. For benchmarks, which must not share state between runs."""
    from sqlalchemy import create_engine, text

    admin_url = os.environ.get("MSP_TEST_DATABASE_URL") or start()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
