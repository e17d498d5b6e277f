"""/readyz tells the truth: ready only with an assigned consumer and a reachable database."""

import time

import pytest
from fastapi.testclient import TestClient

from services.audit.app import build
from services.audit.settings import AuditSettings
from tests.conftest import unique

pytestmark = pytest.mark.integration


def test_readyz_is_503_until_the_consumer_is_assigned_and_200_after(bootstrap: str, pg_url: str) -> None:
    settings = AuditSettings(
        kafka_bootstrap_servers=bootstrap, database_url=pg_url, consumer_group=unique("g")
    )
    rt, app = build(settings)
    cold = TestClient(app)  # no lifespan: nothing started
    r = cold.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"] == {
        "producer": False,
        "consumers_assigned": False,
        "database": True,
        "anchoring": False,
    }
    assert cold.get("/healthz").status_code == 200

    with TestClient(app) as client:  # runs the lifespan: migrate, producer, consumer
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/readyz").json() == {
            "ready": True,
            "checks": {"producer": True, "consumers_assigned": True, "database": True, "anchoring": True},
        }


def test_readyz_reports_an_unreachable_database(bootstrap: str) -> None:
    settings = AuditSettings(
        kafka_bootstrap_servers=bootstrap, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    _, app = build(settings)
    r = TestClient(app).get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["database"] is False
