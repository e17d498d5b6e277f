"""The platform as real processes for end-to-end tests: ingest, triage, packet and audit on
the test broker and database, in a topic namespace of their own, exporting traces to an OTLP
receiver on loopback. Its fixtures are module-scoped: each test module gets its platform."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.common.db import make_engine
from services.ingest import tenants
from tests.conftest import unique
from tests.fakes.otlp_collector import Collector, otlp_collector
from tests.processes import platform_env, start_platform, stop_platform

SERVICES = ("ingest", "triage", "packet", "audit")
OPERATOR = "o" * 40
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR}"}


@dataclass
class Platform:
    urls: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]
    pg_url: str
    env: dict[str, str] = field(default_factory=dict)  # what the services were started with

    def new_tenant(self) -> tuple[str, str]:
        engine = make_engine(self.pg_url)
        tenant = unique("client")
        tenants.add_tenant(engine, tenant, "E2E client")
        key = tenants.issue_key(engine, tenant)
        engine.dispose()
        return tenant, key

    def engineer_key(self, tenant: str) -> str:
        engine = make_engine(self.pg_url)
        key = tenants.issue_key(engine, tenant, role="engineer")
        engine.dispose()
        return key


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with otlp_collector() as received:
        yield received


@pytest.fixture(scope="module")
def platform(
    bootstrap: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory, collector: Collector
) -> Iterator[Platform]:
    var = tmp_path_factory.mktemp("var")
    # The run's own topics: the services see this run's events, not the history of the
    # shared broker that other tests filled. Traces are exported, as a deployment would, to
    # an OTLP receiver on loopback (batches leave every 100 ms rather than every 5 s).
    env = platform_env(bootstrap, pg_url, var, OPERATOR, "e2e")
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    started = start_platform(SERVICES, env, var)
    procs = {n: p for n, (p, _, _) in started.items()}
    urls = {n: u for n, (_, u, _) in started.items()}
    logs = {n: lg for n, (_, _, lg) in started.items()}
    yield Platform(urls, procs, logs, pg_url, env)
    stop_platform(started)


def op_get(platform: Platform, service: str, path: str, tenant: str, **params: str) -> Any:
    """A read API call as the platform operator, for one tenant."""
    r = httpx.get(
        f"{platform.urls[service]}{path}", params={"tenant_id": tenant, **params}, headers=AS_OPERATOR
    )
    assert r.status_code == 200, r.text
    return r.json()


def signals(platform: Platform, tenant: str) -> list[dict]:  # type: ignore[type-arg]
    return op_get(platform, "triage", "/v1/signals", tenant)["signals"]  # type: ignore[no-any-return]


def wait_for(fn, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = fn()
        if result:
            return result
        time.sleep(0.2)
    return fn()
