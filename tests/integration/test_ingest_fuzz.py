"""Schemathesis against ingest's own OpenAPI, on a real ingest process: whatever it is sent, no
5xx, no hang, and nothing reaches Kafka from a request it refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from libs.common.events import AlertReceived, TicketEvent
from tests.conftest import unique
from tests.processes import spawn_service, wait_ready

pytestmark = pytest.mark.integration
ADMIN = "f" * 40


@pytest.fixture(scope="module")
def fuzz_target(
    bootstrap: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    var = tmp_path_factory.mktemp("fuzz")
    log = var / "ingest.log"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MSP_DATABASE_URL": pg_url,
        "MSP_VAR_DIR": str(var),
        "MSP_ADMIN_TOKEN": ADMIN,
        "MSP_MAX_BODY_BYTES": str(512 * 1024),
    }
    proc, url = spawn_service("ingest", env, log)
    try:
        wait_ready({"ingest": (proc, url, log)})
        tenant = unique("fuzz")
        auth = {"Authorization": f"Bearer {ADMIN}"}
        assert httpx.post(
            f"{url}/v1/admin/tenants", json={"tenant_id": tenant, "name": "f"}, headers=auth
        ).is_success
        key = httpx.post(f"{url}/v1/admin/tenants/{tenant}/keys", json={}, headers=auth).json()["key"]
        yield {"url": url, "key": key, "tenant": tenant, "accepted": set(), "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_ingest_never_fails_with_a_server_error(mode: GenerationMode, fuzz_target: dict[str, Any]) -> None:
    # Schemathesis's own pytest plugin does not run on this pytest; its generation and checks are
    # driven through Hypothesis directly instead, one run per operation of the OpenAPI.
    url = fuzz_target["url"]
    operations = _operations(url)
    assert len(operations) >= 15
    fuzzed: list[str] = []

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            # A valid key and admin token on every case, so the fuzzing reaches the payload
            # handling behind authentication.
            case.headers = {
                **(case.headers or {}),
                "X-API-Key": fuzz_target["key"],
                "Authorization": f"Bearer {ADMIN}",
            }
            started = time.monotonic()
            response = case.call(base_url=url, timeout=15)
            assert time.monotonic() - started < 15, f"{case.operation.label} took too long"
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code == 202:
                fuzz_target["accepted"].update(response.json()["event_ids"])

        try:
            fuzz()
            fuzzed.append(operation.label)
        except Unsatisfiable:
            # An operation without inputs (GET /healthz) has no invalid form to send.
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert len(fuzzed) >= 12, fuzzed


async def _published(bootstrap: str, tenant: str) -> set[str]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    ids: set[str] = set()
    try:
        tps = [TopicPartition(t, p) for t in (AlertReceived.topic, TicketEvent.topic) for p in range(12)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            for records in (await consumer.getmany(timeout_ms=300)).values():
                ids.update(json.loads(r.value)["event_id"] for r in records if r.key == tenant.encode())
    finally:
        await consumer.stop()
    return ids


def test_nothing_was_published_from_a_refused_fuzz_request(
    bootstrap: str, fuzz_target: dict[str, Any]
) -> None:
    assert fuzz_target["accepted"], "the fuzzing never got past validation to an accepted event"
    published = asyncio.run(_published(bootstrap, fuzz_target["tenant"]))
    assert published <= fuzz_target["accepted"]
    assert "Traceback" not in Path(fuzz_target["log"]).read_text()
