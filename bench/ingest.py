"""Ingest throughput and latency over HTTP, acknowledged by Kafka (acks=all, transactions).

Starts ingest as real processes (SO_REUSEPORT, `--workers` of them) on the project's broker,
drives them with wrk (Debian package `wrk`) for single alert posts and for batch posts of
`--batch` alerts, and in the same run measures raw aiokafka producer throughput on the same
broker as the baseline. Prints one JSON line.

    python bench/ingest.py [--seconds 15] [--workers 2] [--batch 1000] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench import spread  # noqa: E402
from bench.raw_kafka import Record, raw_produce_eps  # noqa: E402
from cli import broker, debian  # noqa: E402
from cli.processes import wait_spawned  # noqa: E402
from libs.common.settings import REPO_ROOT  # noqa: E402
from libs.common.topics import drop_namespace, ensure_topics  # noqa: E402

ADMIN = "bench-admin-token-" + "x" * 24
ALERT = (
    '{{"fingerprint":"bench-{tid}-{n}","title":"Disk D: above 90% on FS{m:02d}","severity":"warning",'
    '"device":"FS{m:02d}","site":"hq","starts_at":"2026-11-25T09:00:00Z",'
    '"description":"Disk usage on the data volume crossed the warning threshold."}}'
)


def lua_single(key: str) -> str:
    template = (
        ALERT.replace("90%", "90%%")
        .replace("{tid}", "%d")
        .replace("{n}", "%d")
        .replace("{m:02d}", "%02d")
        .replace("{{", "{")
        .replace("}}", "}")
    )
    headers = '{["Content-Type"]="application/json", ["X-API-Key"]="' + key + '"}'
    return (
        f"TEMPLATE = [[{template}]]\nHEADERS = {headers}\n"
        + """
local counter = 0
function setup(thread) counter = counter + 1; thread:set("tid", counter) end
local n = 0
request = function()
  n = n + 1
  local tid = tid or 0
  return wrk.format("POST", "/v1/alerts", HEADERS, string.format(TEMPLATE, tid, n, n % 50, n % 50))
end
"""
    )


def lua_batch(key: str, size: int) -> str:
    alerts = ",".join(ALERT.format(tid=0, n=i, m=i % 50) for i in range(size))
    body = '{"alerts":[' + alerts + "]}"
    return (
        'wrk.method = "POST"\nwrk.path = "/v1/alerts/batch"\n'
        f"wrk.body = [[{body}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["X-API-Key"] = "{key}"\n'
    )


def run_wrk(url: str, script: str, seconds: int, threads: int, connections: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{out}")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else None,
    }


async def raw_produce(bootstrap: str, topic: str, n: int, value: bytes) -> float:
    records: list[Record] = [(f"t{j % 100}".encode(), value, []) for j in range(n)]
    return await raw_produce_eps(bootstrap, topic, records)


def once(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """One run of the case."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, namespace=namespace))
    var = Path(tempfile.mkdtemp(prefix="msp-bench-ingest-"))
    port = 18081
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MSP_TOPIC_NAMESPACE": namespace,
        "MSP_VAR_DIR": str(var),
        "MSP_HTTP_PORT": str(port),
        "MSP_HTTP_REUSE_PORT": "true",
        "MSP_ADMIN_TOKEN": ADMIN,
        "MSP_RATE_LIMIT_EPS": "10000000",
        "MSP_RATE_LIMIT_BURST": "10000000",
        "MSP_LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{port}"
    procs = []
    try:
        # The first worker migrates the database before the others start.
        for i in range(args.workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.ingest"],
                    env=env,
                    cwd=REPO_ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=(var / f"ingest-{i}.log").open("wb"),
                )
            )
            worker = procs[-1]
            log = var / f"ingest-{i}.log"
            wait_spawned({f"ingest-{i}": (worker, url, log)}, timeout_s=60)
        auth = {"Authorization": f"Bearer {ADMIN}"}
        httpx.post(
            f"{url}/v1/admin/tenants", json={"tenant_id": "bench", "name": "bench"}, headers=auth
        ).raise_for_status()
        key = httpx.post(f"{url}/v1/admin/tenants/bench/keys", json={}, headers=auth).json()["key"]

        warm = run_wrk(url, lua_single(key), 3, 2, args.connections)  # warm the broker and the workers
        single = run_wrk(url, lua_single(key), args.seconds, 2, args.connections)
        batch = run_wrk(url, lua_batch(key, args.batch), args.seconds, 1, 4)
        value = ALERT.format(tid=0, n=0, m=0).encode()
        raw_eps = asyncio.run(raw_produce(bootstrap, f"{namespace}.alerts.raw.v1", 100000, value))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
        asyncio.run(drop_namespace(bootstrap, namespace))
        shutil.rmtree(var, ignore_errors=True)
    return {
        "bench": "ingest",
        "batch_eps": round(batch["rps"] * args.batch),
        "single_eps": round(single["rps"]),
        "single_p50_ms": round(single["p50_ms"], 2),
        "single_p99_ms": round(single["p99_ms"], 2),
        "raw_produce_eps": round(raw_eps),
        "batch_size": args.batch,
        "batch_p99_ms": round(batch["p99_ms"], 2),
        "non_2xx": single["non_2xx"] + batch["non_2xx"] + warm["non_2xx"],
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    spread.add_runs(ap)
    args = ap.parse_args()
    debian.ensure("wrk", "wrk")
    bootstrap = args.bootstrap or broker.start(
        broker.BrokerConfig(port=19092, var_dir=REPO_ROOT / "var" / "test")
    )
    report = spread.repeat("ingest", args.runs, lambda _i: once(args, bootstrap))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
