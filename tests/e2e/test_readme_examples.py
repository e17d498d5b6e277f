"""The README's curl examples, run as a user would run them, against the real processes: each
example block's commands must answer the status codes the README documents for it."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from libs.common.db import make_engine
from libs.common.settings import REPO_ROOT
from services.ingest import tenants
from tests.conftest import unique
from tests.processes import platform_env, start_platform, stop_platform

pytestmark = pytest.mark.e2e
OPERATOR = "r" * 40
EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[^,]+), answers (?P<codes>[\d ]+) -->\s*```bash\n(?P<code>.*?)```", re.S
)
PORTS = {"8081": "ingest", "8082": "triage", "8083": "packet"}


def examples() -> list[tuple[str, list[int], str]]:
    text = (REPO_ROOT / "README.md").read_text()
    return [(m["name"], [int(c) for c in m["codes"].split()], m["code"]) for m in EXAMPLE.finditer(text)]


@pytest.fixture(scope="module")
def services(
    bootstrap: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    var = tmp_path_factory.mktemp("readme")
    started = start_platform(
        ("ingest", "triage", "packet"), platform_env(bootstrap, pg_url, var, OPERATOR, "readme"), var
    )
    try:
        yield {n: url for n, (_, url, _) in started.items()}
    finally:
        stop_platform(started)


def test_the_readme_has_the_examples_this_test_runs() -> None:
    names = [name for name, _, _ in examples()]
    assert names == ["alert", "alertmanager", "ticket lifecycle", "reading", "bad input"]


def test_the_readme_curl_examples_answer_as_documented(services: dict[str, str], pg_url: str) -> None:
    engine = make_engine(pg_url)
    tenant = unique("acme")
    tenants.add_tenant(engine, tenant, "README example")
    env = {
        **os.environ,
        "KEY": tenants.issue_key(engine, tenant),
        "ENGINEER": tenants.issue_key(engine, tenant, role="engineer"),
    }
    engine.dispose()
    for name, codes, code in examples():
        for port, service in PORTS.items():
            code = code.replace(f"http://127.0.0.1:{port}", services[service])
        code = re.sub(r"\bacme\b", tenant, code)
        if name == "reading":  # the ticket's packet is built from the lifecycle just posted
            packets = f"{services['packet']}/v1/packets?tenant_id={tenant}&ticket_id=4711"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                probe = subprocess.run(
                    [
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-H",
                        f"X-API-Key: {env['ENGINEER']}",
                        packets,
                    ],
                    capture_output=True,
                    text=True,
                )
                if probe.stdout == "200":
                    break
                time.sleep(0.3)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (name, done.stderr)
        answers = [line.rsplit(" ", 1) for line in done.stdout.strip().splitlines()]
        got = [int(status) for _, status in answers]
        expected = codes if len(codes) == len(got) else codes * len(got)
        assert got == expected, (name, done.stdout)
        if name in ("alert", "alertmanager", "ticket lifecycle"):
            assert all('"event_ids":["' in body for body, _ in answers), done.stdout
        if name == "reading":
            assert f'"tenant_id":"{tenant}"' in answers[0][0] and '"ticket_id":"4711"' in answers[1][0]
            assert '"packet_id"' in answers[2][0], "the escalated ticket's packet is listed"
        if name == "bad input":
            assert "Content-Type: application/json" in answers[0][0]
            assert "JSON object" in answers[1][0] and "severity" in answers[2][0]
