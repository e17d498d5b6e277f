"""Every service's OpenAPI says exactly what the service does: Schemathesis with all its checks
(status codes, content types, response schemas and headers, valid requests accepted, invalid
ones refused, `Allow` on 405, ...) against each running service, valid and invalid requests
alike, and not one failure. Clients are generated from these documents."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from tests.conftest import unique
from tests.processes import platform_env, start_platform, stop_platform

pytestmark = pytest.mark.integration
TOKEN = "c" * 40
SERVICES = ("ingest", "triage", "packet", "audit", "automation")
EXAMPLES = 20  # per operation and mode; derandomized, so a run is the same run every time


@pytest.fixture(scope="module")
def platform(
    bootstrap: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    var = tmp_path_factory.mktemp("contracts")
    env = platform_env(bootstrap, pg_url, var, TOKEN, "contracts")
    started = start_platform(SERVICES, env, var)
    try:
        ingest = started["ingest"][1]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        tenant = unique("contract")
        assert httpx.post(
            f"{ingest}/v1/admin/tenants", json={"tenant_id": tenant, "name": "contracts"}, headers=auth
        ).is_success
        key = httpx.post(f"{ingest}/v1/admin/tenants/{tenant}/keys", json={}, headers=auth).json()["key"]
        yield {"urls": {name: url for name, (_, url, _) in started.items()}, "key": key, "var": var}
    finally:
        stop_platform(started)


def _fuzz(url: str, key: str, mode: GenerationMode) -> tuple[int, list[str]]:
    """Send every operation `EXAMPLES` generated requests of the mode; returns how many were
    sent and one line per failed check."""
    load_all_checks()
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    sent = 0
    for result in schema.get_all_operations():
        try:
            sent += _fuzz_operation(result.ok(), url, key, mode, failures)
        except Unsatisfiable:
            # An operation without inputs has no invalid form to send.
            assert mode is GenerationMode.NEGATIVE, result.ok().label
    return sent, failures


def _fuzz_operation(operation: Any, url: str, key: str, mode: GenerationMode, failures: list[str]) -> int:
    checks = CHECKS.get_all()
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        nonlocal sent
        # The operator token and a tenant key on every case, so requests reach what sits behind
        # authentication.
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}", "X-API-Key": key}
        response = case.call(base_url=url, timeout=30)
        sent += 1
        try:
            case.validate_response(response, checks=checks)
        except (AssertionError, BaseExceptionGroup) as exc:  # what Schemathesis's checks raise
            first = " ".join(str(exc).split())[:300]
            failures.append(f"{operation.label}: {response.status_code}: {first}")

    run()
    return sent


@pytest.mark.parametrize("service", SERVICES)
def test_the_api_does_what_its_openapi_says(service: str, platform: dict[str, Any]) -> None:
    url = platform["urls"][service]
    report: Counter[str] = Counter()
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        sent, found = _fuzz(url, platform["key"], mode)
        report[f"{mode.value} requests"] = sent
        failures += found
    print(f"{service}: {dict(report)}, failures {len(failures)}")
    assert report["positive requests"] > 0 and report["negative requests"] > 0
    assert not failures, "\n".join(sorted(set(failures)))
    log = Path(platform["var"]) / f"{service}.log"
    assert "Exception in ASGI application" not in log.read_text()
