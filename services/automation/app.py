"""Wiring of the automation service.

The API turns engineers' instructions into plans (planner.py, interpret.py), checks them
against the tenant policy (policy.py), takes confirmations and approvals, and starts runs by
writing `automation.runs.v1` through the outbox. The executor (executor.py; its own consumer
group, so it scales apart with MSP_AUTOMATION_ROLE=executor) runs each step once through the
tenant's connectors (connectors/) and reports on `automation.results.v1` and the audit trail.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from libs.common.embeddings import shared_embedder
from libs.common.events import AutomationResult, AutomationRun, TicketEvent, TicketTriaged
from libs.common.outbox import OutboxRelay
from libs.common.reasoning import reasoning_from_settings
from libs.common.service import Runtime
from services.automation import tables
from services.automation.api import AutomationApi, make_router
from services.automation.automations import Automations
from services.automation.executor import Executor
from services.automation.handlers import Lifecycle
from services.automation.interpret import LocalInterpreter
from services.automation.miner import Miner
from services.automation.planner import Planner
from services.automation.settings import AutomationSettings


def build(settings: AutomationSettings) -> tuple[Runtime, FastAPI]:
    rt = Runtime(settings, migrations_dir=Path(__file__).parent / "migrations")
    box = settings.secret_box()
    secret = settings.step_secret()
    relay = OutboxRelay(rt.engine, tables.outbox, rt.producer, "automation")
    rt.add_component("outbox", relay.start, relay.stop, lambda: relay.running)
    app = rt.make_app("msp automation", __doc__ or "")
    role = settings.automation_role
    if role in ("all", "executor"):
        executor = Executor(
            engine=rt.engine, box=box, secret=secret, relay=relay, namespace=settings.topic_namespace
        )
        rt.add_consumer(
            [AutomationRun.topic],
            executor.handle,
            group_id=f"{settings.effective_consumer_group}-executor",
            max_records=20,
        )
    if role in ("all", "api"):
        embed = shared_embedder().encode
        planner = Planner(
            reasoning_from_settings(settings, embed=embed, engine=rt.engine), LocalInterpreter(embed)
        )
        api = AutomationApi(
            settings=settings,
            engine=rt.engine,
            box=box,
            planner=planner,
            relay=relay,
            secret=secret,
            namespace=settings.topic_namespace,
        )
        drafts = Automations(rt.engine, relay, settings.topic_namespace)
        lifecycle = Lifecycle(
            rt.engine,
            relay,
            drafts,
            embed=embed,
            reasoning=planner.reasoning,
            interpreter=planner.local,
            namespace=settings.topic_namespace,
        )
        # Tickets, their triage and the automations' results: drafts, rollout decisions,
        # maintenance. Keyed by tenant, so each tenant's events arrive in order.
        rt.add_consumer(
            [TicketEvent.topic, TicketTriaged.topic, AutomationResult.topic],
            lifecycle.handle,
            group_id=f"{settings.effective_consumer_group}-automations",
        )
        miner = Miner(
            rt.engine, drafts, embed=embed, interpreter=planner.local, interval_s=settings.mining_interval_s
        )
        rt.add_component("miner", miner.start, miner.stop, lambda: miner.running)
        app.include_router(make_router(api, settings, drafts, miner))
    return rt, app
