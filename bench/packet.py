"""Packet latency: from an escalation event to its note posted in the PSA, without an LLM.

Runs the packet service as a process on the real broker, with its state in PostgreSQL (the
project's own server) and a fresh topic namespace, posting into a recording PSA on loopback.
Each of `--tenants` tenants has runbooks (its own and the global library), a PSA target and
open signals on its devices; escalations of new tickets are produced onto `tickets.events.v1`
at `--rate` per second for `--seconds`. A packet's latency runs from handing the escalation to
the producer to the PSA receiving the note. In the same run, a plain consumer reads the same
events back: `bus_p95_latency_s`, the floor the bus itself puts under any consumer.

Prints one JSON line:

    python bench/packet.py [--rate 20] [--seconds 30] [--tenants 20] [--bootstrap H:P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402

from bench import spread  # noqa: E402
from bench.cpu import cpu_seconds, per_unit  # noqa: E402
from cli import broker, postgres  # noqa: E402
from cli.processes import spawn_service, wait_spawned  # noqa: E402
from libs.common.bus import EventProducer  # noqa: E402
from libs.common.events import (  # noqa: E402
    Escalation,
    EventSource,
    SignalClustered,
    SignalPayload,
    TicketEvent,
    TicketEventPayload,
    TicketNote,
    TicketSnapshot,
)
from libs.common.settings import REPO_ROOT  # noqa: E402
from libs.common.topics import drop_namespace, ensure_topics, physical  # noqa: E402
from tests.fakes.psa_sink import PsaSink, psa_sink  # noqa: E402

OPERATOR = "bench-operator-token-" + "x" * 20
PROBLEMS = [
    ("Cannot save files to the S: drive", "Saving says the disk is full.", "Disk D: above 97% on {d}"),
    (
        "VPN drops every few minutes",
        "Remote users lose the tunnel to the office.",
        "IPsec tunnel down on {d}",
    ),
    (
        "Backups failed last night",
        "The nightly job reports errors for two volumes.",
        "Backup job failed on {d}",
    ),
    ("Printer on floor 2 offline", "Jobs stay in the queue.", "Printer {d} not responding to ping"),
    (
        "Outlook keeps asking for the password",
        "Several users since this morning.",
        "Exchange auth errors on {d}",
    ),
]
RUNBOOK = """# {title}

## Meaning
{title}: what it means for the users at the site and which service is affected.

## Diagnosis
- Check the device {device} in the RMM for the last hour of alerts.
- Confirm whether the change window last night completed.
- Check the event log of {device} for errors since the alert began.

## Mitigation
Restart the affected service on {device}; if the problem persists, escalate to the vendor.
"""


async def setup(url: str, bootstrap: str, namespace: str, tenants: list[str]) -> None:
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:
        for n, (title, _, _) in enumerate(PROBLEMS):
            body = {"path": f"global/p{n}.md", "markdown": RUNBOOK.format(title=title, device="the server")}
            (await client.put(f"{url}/v1/kb/runbooks", json=body)).raise_for_status()
        for t in tenants:
            target = {
                "tenant_id": t,
                "kind": "webhook",
                "base_url": f"{SINK}/hook",
                "credentials": {"secret": t},
            }
            (await client.put(f"{url}/v1/psa", json=target)).raise_for_status()
            for n, (title, _, _) in enumerate(PROBLEMS[:2]):
                body = {
                    "tenant_id": t,
                    "path": f"own/p{n}.md",
                    "markdown": RUNBOOK.format(title=title, device=f"{t}-SRV{n}"),
                }
                (await client.put(f"{url}/v1/kb/runbooks", json=body)).raise_for_status()
    producer = EventProducer(bootstrap, client_id="bench-setup", namespace=namespace)
    await producer.start()
    now = datetime.now(UTC)
    for t in tenants:
        for n, (_, _, alert) in enumerate(PROBLEMS):
            await producer.publish(
                SignalClustered(
                    event_id=uuid.uuid4(),
                    tenant_id=t,
                    occurred_at=now,
                    source=EventSource(system="bench"),
                    payload=SignalPayload(
                        signal_id=uuid.uuid4(),
                        state="opened",
                        title=alert.format(d=f"{t}-SRV{n}"),
                        member_alert_ids=[uuid.uuid4() for _ in range(3)],
                        devices=[f"{t}-SRV{n}"],
                        sites=["hq"],
                        severity="high",
                        first_seen=now,
                        last_seen=now,
                        count=3,
                        confidence=0.8,
                    ),
                )
            )
    await producer.stop()


async def escalate(
    bootstrap: str, namespace: str, tenants: list[str], rate: float, seconds: float
) -> dict[str, float]:
    """Produce escalations at `rate`; returns ticket id -> time handed to the producer."""
    producer = EventProducer(bootstrap, client_id="bench", namespace=namespace)
    await producer.start()
    sent: dict[str, float] = {}
    total = int(rate * seconds)
    start = time.monotonic()
    for i in range(total):
        t = tenants[i % len(tenants)]
        n = i % len(PROBLEMS)
        title, description, _ = PROBLEMS[n]
        tid = f"{i}"
        event = TicketEvent(
            event_id=uuid.uuid4(),
            tenant_id=t,
            occurred_at=datetime.now(UTC),
            source=EventSource(system="bench-psa", reference=tid),
            payload=TicketEventPayload(
                kind="escalated",
                ticket=TicketSnapshot(
                    ticket_id=tid, title=title, description=description, devices=[f"{t}-SRV{n}"], site="hq"
                ),
                note=TicketNote(note_id=f"n{i}", text="Restarted the service; no change."),
                escalation=Escalation(from_tier="L1", to_tier="L2"),
            ),
        )
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[f"{t}/{tid}"] = time.time()
        await producer.publish(event)
    await producer.stop()
    return sent


async def bus_floor(bootstrap: str, namespace: str, seen: dict[str, float]) -> None:
    consumer = AIOKafkaConsumer(
        physical("tickets.events.v1", namespace),
        bootstrap_servers=bootstrap,
        group_id=f"bench-floor-{namespace}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for r in records:
                    body = json.loads(r.value)
                    seen.setdefault(f"{body['tenant_id']}/{body['payload']['ticket']['ticket_id']}", now)
    finally:
        await consumer.stop()


async def run(
    bootstrap: str,
    namespace: str,
    url: str,
    tenants: list[str],
    rate: float,
    seconds: float,
    sink: PsaSink,
    pid: int,
) -> tuple[dict[str, float], dict[str, float], float | None]:
    """The escalations sent and their notes awaited; returns the send times, the bus floor's
    read times, and the service's CPU time per escalation in ms over that span."""
    await setup(url, bootstrap, namespace, tenants)
    await asyncio.sleep(2.0)  # the signals reach the service before the tickets do
    floor: dict[str, float] = {}
    reader = asyncio.create_task(bus_floor(bootstrap, namespace, floor))
    cpu_before = cpu_seconds([pid])
    sent = await escalate(bootstrap, namespace, tenants, rate, seconds)
    deadline = time.monotonic() + 60
    while len(sink.notes) < len(sent) and time.monotonic() < deadline:  # noqa: ASYNC110 (another thread fills it)
        await asyncio.sleep(0.2)
    cpu_ms = per_unit(cpu_before, cpu_seconds([pid]), len(sent), 1e3)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    return sent, floor, cpu_ms


SINK = ""


def once(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """One run of the case."""
    global SINK
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, namespace=namespace))
    tenants = [f"client-{i:03d}" for i in range(args.tenants)]
    var = Path(tempfile.mkdtemp(prefix="msp-bench-packet-"))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MSP_TOPIC_NAMESPACE": namespace,
        "MSP_VAR_DIR": str(var),
        "MSP_CONSUMER_GROUP": f"msp-{namespace}",
        "MSP_ADMIN_TOKEN": OPERATOR,
        "MSP_LOG_LEVEL": os.environ.get("MSP_LOG_LEVEL", "WARNING"),
    }
    with (
        psa_sink() as (sink, sink_url),
        postgres.scratch_database(f"bench_{namespace.replace('-', '_')}") as db_url,
    ):
        SINK = sink_url
        env["MSP_DATABASE_URL"] = db_url
        log = var / "packet.log"
        proc, url = spawn_service("packet", env, log)
        try:
            wait_spawned({"packet": (proc, url, log)}, timeout_s=120)
            print(
                f"[bench] {int(args.rate * args.seconds)} escalations at {args.rate:g}/s",
                file=sys.stderr,
                flush=True,
            )
            sent, floor, cpu_ms = asyncio.run(
                run(bootstrap, namespace, url, tenants, args.rate, args.seconds, sink, proc.pid)
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            asyncio.run(drop_namespace(bootstrap, namespace))
    received: dict[str, float] = {}
    for note in sink.notes:
        received.setdefault(f"{note['body']['tenant_id']}/{note['body']['ticket_id']}", note["received"])
    lat = sorted(received[k] - sent[k] for k in sent if k in received)
    bus = sorted(floor[k] - sent[k] for k in sent if k in floor)
    return {
        "bench": "packet",
        "packets": len(lat),
        "escalations": len(sent),
        "p50_latency_s": round(lat[len(lat) // 2], 3) if lat else None,
        "p95_latency_s": round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 3) if lat else None,
        "max_latency_s": round(lat[-1], 3) if lat else None,
        "bus_p95_latency_s": round(bus[min(len(bus) - 1, int(len(bus) * 0.95))], 3) if bus else None,
        # The service's CPU per escalation (all its threads), from the first escalation sent
        # to the last note received: the cost of one, steadier than latency in an overload.
        "service_cpu_ms_per_escalation": cpu_ms,
        "offered_rate": args.rate,
        "tenants": args.tenants,
        "llm": False,
        "namespace": namespace,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--tenants", type=int, default=20)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    spread.add_runs(ap)
    args = ap.parse_args()
    bootstrap = args.bootstrap or broker.start(
        broker.BrokerConfig(port=19092, var_dir=REPO_ROOT / "var" / "test")
    )
    report = spread.repeat("packet", args.runs, lambda _i: once(args, bootstrap))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
