"""Alert clustering throughput and alert-to-signal latency: triage alone, on the real broker.

Runs the triage service as `--workers` processes of one consumer group (tenants' partitions
split between them, as replicas of a deployment are), with their state in PostgreSQL (the
project's own server, started if needed) and a fresh topic namespace; it
produces alerts of 100 tenants straight onto `alerts.raw.v1` at `--rate` per second for
`--seconds`, and follows `signals.clustered.v1`: an alert's latency runs from the moment it
was handed to the producer to the moment a signal revision naming it was read back. In the
same run, raw aiokafka produces the same records as fast as it can: `bus_eps`, the ceiling
the bus itself puts on any consumer.

The alerts are realistic in shape: each tenant has sites with devices, a few dozen alert
templates, repeats of the same fingerprint, bursts across the devices of one site, and
resolutions. Prints one JSON line.

    python bench/triage_alerts.py [--rate 10500] [--seconds 40] [--tenants 100] [--workers 2]
                                  [--bootstrap H:P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from bench import spread  # noqa: E402
from bench.cpu import cpu_seconds, per_unit  # noqa: E402
from bench.raw_kafka import raw_produce_eps, raw_producer  # noqa: E402
from cli import broker  # noqa: E402
from cli.processes import spawn_service, wait_spawned  # noqa: E402
from libs.common.bus import encode  # noqa: E402
from libs.common.events import AlertPayload, AlertReceived, EventSource, utcnow  # noqa: E402
from libs.common.settings import REPO_ROOT  # noqa: E402
from libs.common.topics import TopicSpec, drop_namespace, ensure_topics, physical  # noqa: E402

TEMPLATES = [
    "Disk {v}: above {n}% on {d}",
    "CPU above {n}% for 15 minutes on {d}",
    "Service {s} stopped on {d}",
    "Backup job {g} failed on {d}",
    "Ping loss {n}% to {d}",
    "Memory above {n}% on {d}",
    "Event log error {n} from {s} on {d}",
    "Certificate for {s}.corp.local expires in {n} days",
    "Patch install failed with code 0x{h} on {d}",
    "UPS on battery at {d}",
]
ADDED = re.compile(rb'"added_alert_ids":\[([^\]]*)\]')
UUIDS = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SERVICES = ["Spooler", "W32Time", "MSSQLSERVER", "Veeam", "DNS", "IIS", "Exchange"]


def make_alerts(
    n: int, tenants: int, seed: int = 7
) -> list[tuple[str | None, str, bytes, list[tuple[str, bytes]]]]:
    """(alert id, tenant, value, headers) for n alerts across the tenants, in send order. The
    id is None for resolutions: the latency measured is that of firing alerts."""
    rng = random.Random(seed)
    base = utcnow() - timedelta(hours=1)
    state: dict[str, dict[str, Any]] = {}
    out = []
    trace: list[tuple[str, bytes]] = []
    for _ in range(n):
        tenant = f"bench-t{rng.randrange(tenants):03d}"
        st = state.setdefault(tenant, {"t": 0.0, "firing": []})
        st["t"] += rng.expovariate(1 / 2.0)  # seconds of event time between a tenant's alerts
        site = f"site-{rng.randrange(3)}"
        device = f"{site}-srv{rng.randrange(12):02d}"
        if st["firing"] and rng.random() < 0.25:
            fp, title, device, site = st["firing"].pop(rng.randrange(len(st["firing"])))
            status = "resolved"
        else:
            k = rng.randrange(len(TEMPLATES))
            title = TEMPLATES[k].format(
                v=rng.choice("CDE"),
                n=rng.randrange(50, 100),
                d=device,
                s=rng.choice(SERVICES),
                g=uuid.UUID(int=rng.getrandbits(128)),
                h=f"{rng.getrandbits(32):08x}",
            )
            fp = f"{k}-{device}"
            status = "firing"
            if len(st["firing"]) < 500:
                st["firing"].append((fp, title, device, site))
        at = base + timedelta(seconds=st["t"])
        event = AlertReceived(
            event_id=uuid.UUID(int=rng.getrandbits(128)),
            tenant_id=tenant,
            occurred_at=at,
            source=EventSource(system="bench-rmm", reference=fp),
            payload=AlertPayload(
                fingerprint=fp,
                status=status,  # type: ignore[arg-type]
                title=title,
                device=device,
                site=site,
                starts_at=at,
            ),
        )
        key, value, headers = encode(event, trace)
        out.append((str(event.event_id) if status == "firing" else None, tenant, value, headers))
    return out


async def sustained(
    bootstrap: str, namespace: str, records: list[Any], rate: float
) -> tuple[dict[str, float], dict[str, float], float, list[int]]:
    """Produce at `rate`; returns send time and signal time per alert, the send duration, and
    the signal revisions read back with their bytes (what the service wrote for the alerts)."""
    topic = physical("alerts.raw.v1", namespace)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    revisions = [0, 0]  # count, bytes
    consumer = AIOKafkaConsumer(
        physical("signals.clustered.v1", namespace),
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for recs in batch.values():
                for r in recs:
                    revisions[0] += 1
                    revisions[1] += len(r.value)
                    # A regex, not json.loads: the watcher shares the two cores it measures.
                    m = ADDED.search(r.value)
                    if m:
                        for aid in UUIDS.findall(m.group(1)):
                            seen.setdefault(aid.decode(), now)

    watcher = asyncio.create_task(watch())
    producer = raw_producer(bootstrap, "bench-load")
    await producer.start()
    chunk = max(1, int(rate / 100))  # send in 10 ms slices
    # Partitions as the platform's producers choose them (murmur2 of the tenant key), computed
    # once per tenant; records go out as whole batches per partition, so that the load
    # generator leaves the CPU to what it measures.
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    part_of: dict[str, int] = {}
    start = time.monotonic()
    try:
        for i in range(0, len(records), chunk):
            due = start + i / rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            now = time.time()
            batches: dict[int, Any] = {}
            for aid, tenant, value, headers in records[i : i + chunk]:
                if aid is not None:
                    sent[aid] = now
                key = tenant.encode()
                p = part_of.get(tenant)
                if p is None:
                    p = part_of[tenant] = partitioner(key, partitions, partitions)
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    await producer.send_batch(batch, topic, partition=p)
                    batch = batches[p] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            for p, batch in batches.items():
                await producer.send_batch(batch, topic, partition=p)
        await producer.flush()
        send_s = time.monotonic() - start
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(a in seen for a in sent):
                break
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await watcher
        await producer.stop()
        await consumer.stop()
    return sent, seen, send_s, revisions


def once(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """One run of the case."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, namespace=namespace))
    n = int(args.rate * args.seconds)
    print(f"[bench] building {n} alerts of {args.tenants} tenants", file=sys.stderr, flush=True)
    records = make_alerts(n, args.tenants)
    baseline = make_alerts(min(n, 100_000), args.tenants, seed=8)
    var = Path(tempfile.mkdtemp(prefix="msp-bench-triage-"))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MSP_TOPIC_NAMESPACE": namespace,
        "MSP_VAR_DIR": str(var),
        "MSP_CONSUMER_GROUP": f"msp-{namespace}",
        "MSP_LOG_LEVEL": os.environ.get("MSP_LOG_LEVEL", "WARNING"),
    }
    from cli import postgres

    with postgres.scratch_database(f"bench_{namespace.replace('-', '_')}") as db_url:
        env["MSP_DATABASE_URL"] = db_url
        procs: list[subprocess.Popen[bytes]] = []
        try:
            # The bus ceiling first, on a topic of its own, so it does not feed the service.
            raw_topic = f"{namespace}.bench-raw"
            asyncio.run(ensure_topics(bootstrap, [TopicSpec(raw_topic, AlertReceived)]))
            bus_eps = asyncio.run(
                raw_produce_eps(bootstrap, raw_topic, [(t.encode(), v, h) for _, t, v, h in baseline])
            )
            for i in range(args.workers):  # one at a time: the first one migrates the database
                proc, url = spawn_service("triage", env, var / f"triage-{i}.log")
                procs.append(proc)
                wait_spawned({f"triage-{i}": (proc, url, var / f"triage-{i}.log")}, timeout_s=120)
            print(f"[bench] producing {n} alerts at {args.rate:.0f}/s", file=sys.stderr, flush=True)
            cpu_before = cpu_seconds(p.pid for p in procs)
            sent, seen, send_s, revisions = asyncio.run(sustained(bootstrap, namespace, records, args.rate))
            cpu_after = cpu_seconds(p.pid for p in procs)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
            asyncio.run(drop_namespace(bootstrap, namespace))
    first = min(sent.values())
    done = [aid for aid in sent if aid in seen]
    lat = sorted(seen[a] - sent[a] for a in done)
    last = max(seen[a] for a in done) if done else first
    return {
        "bench": "triage_alerts",
        # every alert event, firing or resolved, over the time from the first sent to
        # the last firing alert's signal revision read back
        "alerts_per_s": round(len(records) / max(last - first, 1e-9), 1),
        "firing_alerts_per_s": round(len(done) / max(last - first, 1e-9), 1),
        "p99_latency_s": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3) if lat else None,
        "p50_latency_s": round(lat[len(lat) // 2], 3) if lat else None,
        "bus_eps": round(bus_eps, 1),
        "alerts": len(records),
        "firing_alerts": len(sent),
        "firing_alerts_reaching_a_signal": len(done),
        # What the service publishes per alert: the output side of its cost.
        "signal_revisions": revisions[0],
        "revisions_per_firing_alert": round(revisions[0] / max(len(sent), 1), 3),
        "mean_revision_bytes": round(revisions[1] / max(revisions[0], 1)),
        # The workers' CPU per alert event (all their threads, from the first alert sent to
        # the last signal read back): the cost of one, steadier than latency in an overload.
        "service_cpu_us_per_alert": per_unit(cpu_before, cpu_after, len(records), 1e6),
        "offered_rate": args.rate,
        "send_seconds": round(send_s, 2),
        "tenants": args.tenants,
        "workers": args.workers,
        "namespace": namespace,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10500)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2, help="triage processes in the consumer group")
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    spread.add_runs(ap)
    args = ap.parse_args()
    bootstrap = args.bootstrap or broker.start(
        broker.BrokerConfig(port=19092, var_dir=REPO_ROOT / "var" / "test")
    )
    report = spread.repeat("triage_alerts", args.runs, lambda _i: once(args, bootstrap))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
