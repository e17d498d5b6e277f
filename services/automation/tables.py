"""The automation service's tables.

- tools: a tenant's tool map (which connector serves each kind of system) with its
  credentials, sealed with MSP_SECRETS_KEY; never returned by an API.
- policies: a tenant's action policy (policy.py), JSON.
- plans: an instruction interpreted for a ticket, its steps and what policy said of each.
- always_allowed: actions an approver lets a tenant's engineers run without a second person.
- runs: a confirmed plan being (or having been) run.
- ledger: one row per step of a run, keyed by its idempotency key: what the executor started,
  finished, and the connector's answer. A row left `started` after a crash means "may have
  run": the executor asks the peer before running it again.
"""

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from libs.common.outbox import outbox_table

metadata = MetaData()

tools = Table(
    "automation_tools",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("sealed", Text, nullable=False),
    Column("systems", Text, nullable=False),  # JSON {system: connector kind}: what may be shown
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

policies = Table(
    "automation_policies",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("doc", Text, nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

plans = Table(
    "automation_plans",
    metadata,
    Column("plan_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("ticket_id", String(200)),
    Column("instruction", Text, nullable=False),
    Column("ticket", Text, nullable=False),  # JSON: the ticket context the plan was made from
    Column("steps", Text, nullable=False),  # JSON list of steps with params, sources, policy
    Column("questions", Text, nullable=False),
    Column("unmatched", Text, nullable=False),
    Column("interpreter", String(20), nullable=False),
    Column("status", String(30), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("approved_by", String(200)),
    Column("approval_reason", Text),
    Column("decided_at", DateTime(timezone=True)),
    Column("run_id", String(36)),
    Index("ix_automation_plans_tenant", "tenant_id", "created_at"),
)

always_allowed = Table(
    "automation_always_allowed",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("action", String(100), primary_key=True),
    Column("granted_by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
)

runs = Table(
    "automation_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("plan_id", String(36)),
    Column("ticket_id", String(200)),
    Column("requested_by", String(200), nullable=False),
    Column("approved_by", String(200)),
    Column("steps", Text, nullable=False),
    Column("status", String(20), nullable=False),  # queued, running, succeeded, failed
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("dry_run", Boolean, nullable=False, server_default=false()),
    # Set when an approved automation ran it (auto mode) rather than an engineer's plan.
    Column("automation_id", String(36)),
    Column("automation_version", Integer),
    Index("ix_automation_runs_tenant", "tenant_id", "created_at"),
    Index("ix_automation_runs_automation", "automation_id", "created_at"),
    Index("ix_automation_runs_ticket", "tenant_id", "ticket_id"),
)

ledger = Table(
    "automation_ledger",
    metadata,
    Column("idempotency_key", String(32), primary_key=True),
    Column("run_id", String(36), nullable=False),
    Column("tenant_id", String(63), nullable=False),
    Column("step", Integer, nullable=False),
    Column("action", String(100), nullable=False),
    Column("state", String(20), nullable=False),  # started, succeeded, failed, awaiting_code
    Column("attempts", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_ms", Float),
    Column("response", Text),  # JSON: the connector's answer (never a credential)
    Column("error_class", String(100)),
    Column("message", Text),
    Column("code_sealed", Text),  # the MFA code an engineer entered, sealed, until checked
    UniqueConstraint("run_id", "step", name="uq_automation_ledger_run_step"),
)

# What the service knows of a ticket (from tickets.events.v1 and tickets.triaged.v1): what an
# automation's trigger and parameters are made from.
ticket_context = Table(
    "automation_ticket_context",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("ticket_id", String(200), primary_key=True),
    Column("title", Text, nullable=False),
    Column("requester", String(300)),
    Column("device", String(200)),
    Column("category", String(200)),
    Column("intent", String(200)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The ticket's history, for drafts from notes, candidate mining and readiness.
    Column("description", Text),
    Column("psa_category", String(200)),  # the category the PSA holds (set by people)
    Column("status", String(30)),
    Column("opened_at", DateTime(timezone=True)),
    Column("resolved_at", DateTime(timezone=True)),
    Column("notes", Text),  # the ticket's notes, in order (bounded)
    Index("ix_automation_ticket_context_resolved", "tenant_id", "resolved_at"),
)

# Automations: a draft made from a resolution, approved into versions. A version never changes
# once written; approving one makes it the automation's current version.
automations = Table(
    "automation_automations",
    metadata,
    Column("automation_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("name", Text, nullable=False),
    Column("status", String(20), nullable=False),  # draft, active, paused, retired
    Column("current_version", Integer),
    Column("source_ticket_id", String(200)),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The last pause, resume or retirement: who, why, when; and the failures in a row since the
    # last success (the tenant's policy pauses the automation at its threshold).
    Column("status_by", String(200)),
    Column("status_reason", Text),
    Column("status_at", DateTime(timezone=True)),
    Column("failures_in_row", Integer, nullable=False, server_default="0"),
    UniqueConstraint("tenant_id", "source_ticket_id", name="uq_automation_automations_source"),
)

automation_versions = Table(
    "automation_versions",
    metadata,
    Column("automation_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("trigger", Text, nullable=False),  # JSON: intent, category, example, threshold
    Column("steps", Text, nullable=False),  # JSON: actions with bound parameters
    Column("preconditions", Text, nullable=False),
    Column("source", Text, nullable=False),  # JSON: kind (resolution, failure analysis, edit), tickets, runs
    Column("diff", Text, nullable=False),  # JSON: against the previous version
    Column("author", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Every approval, in order: the version it approved, who, why (approving an earlier version
# again is a rollback).
automation_approvals = Table(
    "automation_approvals",
    metadata,
    Column("approval_id", String(36), primary_key=True),
    Column("automation_id", String(36), nullable=False),
    Column("tenant_id", String(63), nullable=False),
    Column("version", Integer, nullable=False),
    Column("approver", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("approved_at", DateTime(timezone=True), nullable=False),
    Index("ix_automation_approvals_automation", "automation_id", "approved_at"),
)

# What the rollout decided for each (ticket, automation) that matched: once, whatever redelivers.
decisions = Table(
    "automation_decisions",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("ticket_id", String(200), primary_key=True),
    Column("automation_id", String(36), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("mode", String(20), nullable=False),  # the tenant's rollout mode for the category
    Column("decision", String(20), nullable=False),  # shadow, suggested, ran, not_run
    Column("similarity", Float, nullable=False),
    Column("params", Text, nullable=False),  # JSON: the steps bound from this ticket
    Column("reason", Text, nullable=False),
    Column("plan_id", String(36)),
    Column("run_id", String(36)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_automation_decisions_automation", "automation_id", "created_at"),
)

# One analysis per failed automation run: the step, its error, the cause and the version proposed.
failures = Table(
    "automation_failures",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("automation_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("action", String(100), nullable=False),
    Column("error_class", String(100)),
    Column("analysis", Text, nullable=False),  # JSON
    Column("proposed_version", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_automation_failures_automation", "automation_id", "created_at"),
)

# The latest candidate mining and readiness report of a tenant.
mining = Table(
    "automation_mining",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("kind", String(20), primary_key=True),  # candidates, readiness
    Column("tickets", Integer, nullable=False),  # resolved tickets it considered
    Column("took_s", Float, nullable=False),
    Column("doc", Text, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)

outbox = outbox_table(metadata, "automation")
