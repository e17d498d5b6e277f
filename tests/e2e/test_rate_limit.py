"""A tenant's rate limit holds across ingest processes: two processes on one database accept
together what one would, not twice as much."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from libs.common.db import make_engine
from services.ingest import tenants
from tests.conftest import unique
from tests.processes import platform_env, start_platform, stop_platform

pytestmark = pytest.mark.e2e
RATE, BURST = 40, 80


def test_two_ingest_processes_share_one_tenant_rate_limit(
    bootstrap: str, pg_url: str, tmp_path: Path
) -> None:
    env = {
        **platform_env(bootstrap, pg_url, tmp_path, "l" * 40, "rl"),
        "MSP_RATE_LIMIT_EPS": str(RATE),
        "MSP_RATE_LIMIT_BURST": str(BURST),
        "MSP_KEY_CACHE_S": "60",
    }
    # Two ingest processes on one database, as a deployment scaled out runs them.
    started = start_platform(["ingest"], env, tmp_path, suffix="-a")
    started = {
        "a": started["ingest"],
        **{"b": start_platform(["ingest"], env, tmp_path, suffix="-b")["ingest"]},
    }
    try:
        engine = make_engine(pg_url)
        tenant = unique("busy")
        tenants.add_tenant(engine, tenant, "rate limit")
        key = tenants.issue_key(engine, tenant)
        engine.dispose()
        urls = [url for _, url, _ in started.values()]
        accepted = refused = 0
        retry_after: set[str] = set()
        with httpx.Client(timeout=10.0, headers={"X-API-Key": key}) as client:
            begin = time.monotonic()
            n = 0
            while (
                (time.monotonic() - begin < 2.0 or refused == 0)
                and time.monotonic() - begin < 20
                and n < 5000
            ):
                alert = {"fingerprint": f"fp-{n}", "title": "load", "device": "D1"}
                r = client.post(f"{urls[n % 2]}/v1/alerts", json=alert)
                n += 1
                if r.status_code == 202:
                    accepted += 1
                else:
                    assert r.status_code == 429, r.text
                    refused += 1
                    retry_after.add(r.headers["Retry-After"])
            elapsed = time.monotonic() - begin
        allowed = BURST + RATE * elapsed
        print(
            f"\nrate limit across 2 processes: {n} posts in {elapsed:.1f} s, {accepted} accepted, "
            f"{refused} refused; one bucket allows {allowed:.0f}"
        )
        assert refused > 0 and retry_after
        # What one bucket allows, plus what each process may hold leased and unspent.
        assert accepted <= allowed + 2 * max(1, min(BURST * 0.05, RATE * 0.05)) + 1
        assert accepted >= BURST, "the burst itself is accepted"
    finally:
        stop_platform(started)
