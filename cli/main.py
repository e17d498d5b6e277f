"""The `msp` command: run the platform locally, manage its broker, tenants and keys, run tests.

Commands import what they need when they run: `msp status` or `msp key list` must not pay for
the embedding model's libraries that `msp eval` loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cli import broker
from cli import processes as platform
from cli.api import Api, ApiError
from cli.local import REPO_ROOT, operator_token, url_of, var_dir
from cli.processes import SERVICES

TEST_BROKER_PORT = 19092
TEST_POSTGRES_PORT = 55432


def _var(args: argparse.Namespace) -> Path:
    return var_dir(args.var_dir)


def _broker_cfg(args: argparse.Namespace) -> broker.BrokerConfig:
    return broker.BrokerConfig(port=args.port, var_dir=_var(args))


def _external_bootstrap() -> str | None:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


def cmd_broker(args: argparse.Namespace) -> int:
    cfg = _broker_cfg(args)
    if args.action == "start":
        if (ext := _external_bootstrap()) is not None:
            cid = broker.wait_ready(ext, timeout_s=30)
            print(f"KAFKA_BOOTSTRAP_SERVERS={ext} names a running cluster ({cid}); not starting one")
            return 0
        print(broker.start(cfg))
    elif args.action == "stop":
        broker.stop(cfg)
    else:
        platform.print_json(broker.status(cfg))
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    bootstrap = _external_bootstrap() or _broker_cfg(args).bootstrap
    created = platform.ensure_topics(bootstrap)
    print(json.dumps({"bootstrap": bootstrap, "created": created}))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    var = _var(args)
    var.mkdir(parents=True, exist_ok=True)
    ext = _external_bootstrap()
    bootstrap = ext or broker.start(_broker_cfg(args))
    state = {"bootstrap": bootstrap, "own_broker": ext is None, "broker_port": args.port}
    (var / "platform.json").write_text(json.dumps(state))
    created = platform.ensure_topics(bootstrap)
    print(f"topics ready ({len(created)} created) on {bootstrap}")
    procs = platform.start_services(var, bootstrap)
    ready = platform.wait_ready(var, procs)
    print(f"\n{'service':<11} {'ready':<6} url                      log")
    for name, ok in ready.items():
        print(f"{name:<11} {str(ok).lower():<6} {url_of(name):<24} {var / 'logs' / (name + '.log')}")
    if not all(ready.values()):
        print("\nsome services are not ready; see their logs", file=sys.stderr)
        return 1
    print(f"\nOpenAPI of each service at its /docs, e.g. {url_of('ingest')}/docs")
    print(f"operator token (read APIs of every tenant, admin API): {var / 'secrets' / 'admin-token'}")
    if args.demo:
        from cli.demo import run_demo

        print("\nreplaying the demo sample for a new demo tenant ...")
        report = run_demo(var)
        platform.print_json(report)
        for p in report["packets"]:
            print(f"\nthe escalated ticket's packet (the link opens for 24 hours):\n  {p['page']}")
        print(f"\n`msp status` shows what the platform holds of {report['tenant']}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    var = _var(args)
    platform.stop_services(var)
    state_file = var / "platform.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if state.get("own_broker"):
            broker.stop(broker.BrokerConfig(port=state["broker_port"], var_dir=var))
        state_file.unlink()
    # What an interrupted `msp test` may have left running.
    _stop_test_infrastructure(broker_too=True, postgres_too=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cli.demo import last_demo

    var = _var(args)
    state_file = var / "platform.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if state.get("own_broker", True):
        cfg = broker.BrokerConfig(port=state.get("broker_port", args.port), var_dir=var)
        pid = broker.pid_of(cfg)
        broker_doc: dict[str, object] = {
            "bootstrap": cfg.bootstrap,
            "pid": pid,
            "running": pid is not None and broker.port_open("127.0.0.1", cfg.port),
        }
    else:
        broker_doc = {"bootstrap": state.get("bootstrap")}
    tenant = args.tenant or (last_demo(var) or {}).get("tenant_id")
    platform.print_json({"broker": broker_doc, **platform.service_status(var, tenant)})
    return 0


def _admin(args: argparse.Namespace) -> Api:
    return Api(args.ingest_url or url_of("ingest"), operator_token(_var(args)))


def cmd_kb(args: argparse.Namespace) -> int:
    """The knowledge base through the packet service's API (it embeds and stores)."""
    import httpx

    from cli.processes import operator_headers
    from services.packet.kb.loader import load_dir

    if (args.tenant is None) == (not args.global_library):
        raise ValueError("name --tenant T, or --global for the global library")
    base = (args.packet_url or url_of("packet")).rstrip("/")
    scope = {"tenant_id": args.tenant} if args.tenant else {}
    with httpx.Client(timeout=120.0, headers=operator_headers(_var(args))) as client:
        if args.action == "add":
            books = load_dir(Path(args.target))
            added = changed = 0
            for n, (path, _) in enumerate(books, 1):
                markdown = (Path(args.target) / path).read_text(encoding="utf-8")
                url = f"{args.url_base.rstrip('/')}/{path}" if args.url_base else None
                r = client.put(
                    f"{base}/v1/kb/runbooks", json={**scope, "path": path, "markdown": markdown, "url": url}
                )
                if r.status_code != 200:
                    raise ValueError(f"{path}: the packet service said {r.status_code}: {r.text[:300]}")
                added += 1
                changed += bool(r.json()["changed"])
                print(f"[kb] {n}/{len(books)} {path}", file=sys.stderr)
            print(json.dumps({"scope": args.tenant or "global", "runbooks": added, "changed": changed}))
        elif args.action == "remove":
            r = client.delete(f"{base}/v1/kb/runbooks", params={**scope, "path": args.target})
            if r.status_code != 200:
                raise ValueError(r.json().get("detail", r.text))
            print(json.dumps(r.json()))
        else:
            r = client.get(f"{base}/v1/kb/runbooks", params=scope)
            r.raise_for_status()
            print(json.dumps(r.json(), indent=2, default=str))
    return 0


def _automation(args: argparse.Namespace) -> Api:
    """The automation API as the caller: their own key (--key or MSP_KEY), else the operator."""
    key = args.key or os.environ.get("MSP_KEY")
    return Api(args.automation_url or url_of("automation"), key or operator_token(_var(args)))


def _show_plan(plan: dict) -> None:  # type: ignore[type-arg]
    print(f"plan {plan['plan_id']} ({plan['status']}, by the {plan.get('interpreter', '?')} interpreter)")
    for s in plan["steps"]:
        params = ", ".join(f"{k}={v}" for k, v in s["params"].items())
        extra = s.get("refused_by") or s.get("approval_rule") or ""
        print(
            f"  {s['index']}. {s['action']}({params})  [{s['status']}, risk {s['risk']}]"
            + (f" - {extra}" if extra else "")
        )
    for q in plan.get("questions", []):
        print(f"  ? {q}")
    for u in plan.get("unmatched", []):
        print(f"  not understood: {u}")
    if plan.get("answer"):
        print(plan["answer"])


def cmd_plan(args: argparse.Namespace) -> int:
    """Plans: an instruction into a plan, then confirm, approve or reject it."""
    api = _automation(args)
    if args.action == "new":
        ticket = {
            k: v
            for k, v in {
                "ticket_id": args.ticket_id,
                "requester": args.requester,
                "device": args.device,
                "summary": args.summary or "",
            }.items()
            if v is not None
        }
        _show_plan(
            api.call(
                "POST",
                "/v1/instructions",
                body={"tenant_id": args.tenant, "instruction": args.target, "ticket": ticket},
            )
        )
    elif args.action == "show":
        _show_plan(api.call("GET", f"/v1/plans/{args.target}", params={"tenant_id": args.tenant}))
    elif args.action == "confirm":
        platform.print_json(
            api.call("POST", f"/v1/plans/{args.target}/confirm", body={"tenant_id": args.tenant})
        )
    else:
        if not args.reason:
            raise ValueError(f"plan {args.action} needs --reason")
        platform.print_json(
            api.call(
                "POST",
                f"/v1/plans/{args.target}/{args.action}",
                body={"tenant_id": args.tenant, "reason": args.reason},
            )
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """A run's progress, step by step; --watch follows it until it ends."""
    import time

    api = _automation(args)
    deadline = time.monotonic() + args.timeout
    shown = -1
    while True:
        view = api.call("GET", f"/v1/runs/{args.run_id}", params={"tenant_id": args.tenant})
        done = sum(1 for s in view["steps"] if s["state"] in ("succeeded", "failed"))
        if done != shown or view["status"] in ("succeeded", "failed") or not args.watch:
            print(f"run {args.run_id}: {view['status']} ({view['progress']})")
            for s in view["steps"]:
                why = f" - {s['error_class']}: {s['message']}" if s["error_class"] else ""
                print(f"  {s['index']}. {s['action']} {s['state']}{why}")
            shown = done
        if not args.watch or view["status"] in ("succeeded", "failed"):
            return 0 if view["status"] != "failed" else 1
        if time.monotonic() > deadline:
            print(f"still {view['status']} after {args.timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.5)


def _show_automation(doc: dict) -> None:  # type: ignore[type-arg]
    print(
        f"automation {doc['automation_id']}: {doc['name']} "
        f"({doc['status']}, live version {doc['current_version']})"
    )
    if doc.get("status_reason"):
        print(f"  {doc['status']} by {doc.get('status_by')}: {doc['status_reason']}")
    for v in doc.get("versions", []):
        source = v["source"].get("kind", "?")
        trigger = f"{v['trigger'].get('intent')}/{v['trigger'].get('category')}"
        print(f"  v{v['version']} by {v['author']} from {source}; trigger {trigger}")
        for n, step in enumerate(v["steps"]):
            params = ", ".join(f"{k}={val}" for k, val in step["params"].items())
            print(f"     {n}. {step['action']}({params})")
        for pre in v["preconditions"]:
            print(f"     requires: {pre.get('text') if isinstance(pre, dict) else pre}")
    for a in doc.get("approvals", []):
        print(f"  approved v{a['version']} by {a['approver']}: {a['reason']}")


def cmd_automation(args: argparse.Namespace) -> int:
    """Automations: list, show, approve a version, pause, resume, retire, runs; candidates and
    readiness of a tenant's history."""
    api = _automation(args)
    tenant = {"tenant_id": args.tenant}
    if args.action == "list":
        for a in api.call("GET", "/v1/automations", params=tenant)["automations"]:
            print(f"{a['automation_id']}  {a['status']:8}  v{a['current_version'] or '-'}  {a['name']}")
    elif args.action in ("candidates", "readiness"):
        doc = api.call("GET", f"/v1/{args.action}", params={**tenant, "refresh": str(args.refresh).lower()})
        platform.print_json(doc)
    else:
        if not args.id:
            raise ValueError(f"automation {args.action} needs the automation id")
        path = f"/v1/automations/{args.id}"
        if args.action == "show":
            _show_automation(api.call("GET", path, params=tenant))
        elif args.action == "runs":
            platform.print_json(api.call("GET", f"{path}/runs", params=tenant))
        else:
            if not args.reason:
                raise ValueError(f"automation {args.action} needs --reason")
            body = {**tenant, "reason": args.reason}
            if args.action == "approve":
                if not args.version:
                    raise ValueError("automation approve needs --version")
                _show_automation(api.call("POST", f"{path}/versions/{args.version}/approve", body=body))
            else:
                _show_automation(api.call("POST", f"{path}/{args.action}", body=body))
    return 0


def cmd_tenant(args: argparse.Namespace) -> int:
    """Tenants and their source mappings, through ingest's admin API."""
    admin = _admin(args)
    if args.action == "add":
        body = {"tenant_id": args.tenant_id, "name": args.name or args.tenant_id}
        admin.call("POST", "/v1/admin/tenants", body=body)
        print(f"tenant {args.tenant_id} added")
    elif args.action == "map":
        if not (args.source and args.external_id):
            raise ValueError("tenant map needs --source and --external-id")
        admin.call(
            "POST",
            f"/v1/admin/tenants/{args.tenant_id}/mappings",
            body={"source_system": args.source, "external_id": args.external_id},
        )
        print(f"{args.source} {args.external_id} -> {args.tenant_id}")
    elif args.tenant_id == "all":
        platform.print_json({"tenants": admin.call("GET", "/v1/admin/tenants")})
    else:
        platform.print_json({"mappings": admin.call("GET", f"/v1/admin/tenants/{args.tenant_id}/mappings")})
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """Keys of a tenant, through ingest's admin API."""
    admin = _admin(args)
    if args.action == "issue":
        issued = admin.call(
            "POST", f"/v1/admin/tenants/{args.tenant}/keys", body={"role": args.role, "label": args.label}
        )
        print(issued["key"])
        print(
            f"signing secret (for sources that sign, e.g. Autotask): {issued['signing_secret']}",
            file=sys.stderr,
        )
        print("store them now: the key is kept only hashed and neither is shown again", file=sys.stderr)
    elif args.action == "list":
        platform.print_json(admin.call("GET", f"/v1/admin/tenants/{args.tenant}/keys"))
    else:
        if not args.key_id:
            raise ValueError("key revoke needs --key-id")
        try:
            admin.call("DELETE", f"/v1/admin/tenants/{args.tenant}/keys/{args.key_id}")
        except ApiError as exc:
            if ": 404:" not in str(exc):
                raise
            print(f"no active key {args.key_id} for tenant {args.tenant}")
            return 1
        print("revoked")
    return 0


def _stop_test_infrastructure(*, broker_too: bool, postgres_too: bool) -> None:
    if broker_too:
        broker.stop(broker.BrokerConfig(port=TEST_BROKER_PORT, var_dir=REPO_ROOT / "var" / "test"))
    if postgres_too:
        from cli import postgres

        postgres.stop(TEST_POSTGRES_PORT)


# What `msp lint` checks: the whole tree's style, and the types of the code the services run.
TYPED = ("services", "libs", "cli", "evals")


def cmd_lint(args: argparse.Namespace) -> int:
    """ruff (lint and format) over the repository, mypy over the services and their libraries."""
    bindir = Path(sys.executable).parent
    steps = [
        [str(bindir / "ruff"), "check", "."],
        [str(bindir / "ruff"), "format", "--check", "."],
        [str(bindir / "mypy"), *TYPED],
    ]
    for step in steps:
        print("$", " ".join(Path(step[0]).name if i == 0 else a for i, a in enumerate(step)), flush=True)
        rc = subprocess.call(step, cwd=REPO_ROOT)
        if rc != 0:
            return rc
    return 0


def _generated(what: str, command: str, wanted: dict[Path, str], present: list[Path], check: bool) -> int:
    """Write files made by code (`wanted`: path -> text), removing `present` ones it no longer
    makes; with `check`, write nothing and fail when any differs (CI runs it)."""
    if check:
        on_disk = {p: p.read_text() for p in present if p.exists()}
        stale = sorted(
            str(p.relative_to(REPO_ROOT))
            for p in set(wanted) | set(on_disk)
            if wanted.get(p) != on_disk.get(p)
        )
        if stale:
            print(f"{what} out of date: {', '.join(stale)} (run ./msp {command})", file=sys.stderr)
            return 1
        print(f"{what} up to date")
        return 0
    for stale_path in set(present) - set(wanted):
        stale_path.unlink(missing_ok=True)
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(REPO_ROOT))
    return 0


def cmd_k8s(args: argparse.Namespace) -> int:
    """Write the Kubernetes manifests from cli/kubernetes.py (--check: fail when k8s/ differs)."""
    from cli import kubernetes as k8s

    present = [*k8s.OUT_DIR.glob("*.yaml"), k8s.SECRET_TEMPLATE]
    return _generated("k8s manifests", "k8s", k8s.outputs(), present, args.check)


def cmd_dashboards(args: argparse.Namespace) -> int:
    """Write the dashboards from cli/dashboards.py (--check: fail when the repository's differ)."""
    from cli import dashboards

    present = list(dashboards.OUT_DIR.glob("*.json"))
    return _generated("dashboards", "dashboards", dashboards.outputs(), present, args.check)


# What a deployment's secrets file holds (docker compose --env-file, kubectl create secret
# --from-env-file): every secret the services refuse to start without in prod.
DEPLOYMENT_SECRETS = (
    "MSP_ADMIN_TOKEN",
    "MSP_SIGNING_PEPPER",
    "MSP_SECRETS_KEY",
    "MSP_AUDIT_ANCHOR_KEY",
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
)


def cmd_secrets(args: argparse.Namespace) -> int:
    """Write a deployment's secrets file with fresh random values (mode 0600); never overwrite
    one, whose values protect data already stored (MSP_SECRETS_KEY decrypts credentials)."""
    import secrets as random_secrets

    from libs.common.crypto import new_key

    path = Path(args.env_file)
    values = {name: random_secrets.token_urlsafe(32) for name in DEPLOYMENT_SECRETS}
    values["MSP_SECRETS_KEY"] = new_key()
    text = "".join(f"{k}={v}\n" for k, v in values.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{path} exists: keep it (its MSP_SECRETS_KEY decrypts stored credentials)", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"{path}: {', '.join(DEPLOYMENT_SECRETS)}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring every service's tables to their newest revision, once (what a deployment runs
    before starting services with MSP_MIGRATE_ON_START=false): in MSP_DATABASE_URL, or in each
    service's embedded SQLite file when it is not set."""
    from libs.common.db import migrate
    from libs.common.settings import ServiceSettings, load_settings

    for name in SERVICES:
        url = load_settings(ServiceSettings, service_name=name).effective_database_url
        migrate(url, REPO_ROOT / "services" / name / "migrations", name)
        print(f"{name}: tables at their newest revision", flush=True)
    return 0


def cmd_migration(args: argparse.Namespace) -> int:
    """Generate a service's next migration from its tables (`services/<name>/tables.py`), or
    with --check, fail when any service's tables and migrations disagree."""
    import importlib

    from libs.common.db import generate_migration

    names = [args.service] if args.service else list(SERVICES)
    if not args.check and (not args.service or not args.message):
        print("msp migration: name the service and say what the change is, e.g. "
              "msp migration packet \"feedback notes\" (or --check)", file=sys.stderr)  # fmt: skip
        return 2
    drifted = []
    for name in names:
        if name not in SERVICES:
            print(f"msp migration: no service {name!r} (one of {', '.join(SERVICES)})", file=sys.stderr)
            return 2
        metadata = importlib.import_module(f"services.{name}.tables").metadata
        migrations = REPO_ROOT / "services" / name / "migrations"
        if args.check:
            with tempfile.TemporaryDirectory() as scratch:
                scratch_dir = Path(scratch) / "migrations"
                shutil.copytree(migrations, scratch_dir)
                if generate_migration(name, metadata, scratch_dir, "check") is not None:
                    drifted.append(name)
            continue
        written = generate_migration(name, metadata, migrations, args.message)
        if written is None:
            print(f"{name}: its migrations already create what its tables declare; nothing written")
        else:
            print(f"{name}: wrote {written.relative_to(REPO_ROOT)} (read it before committing)")
    if drifted:
        print(f"tables and migrations disagree in: {', '.join(drifted)} (msp migration <service> <message>)",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.check:
        print(f"tables and migrations agree: {', '.join(names)}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Start what the tests need (PostgreSQL, the broker), run pytest, stop what it started."""
    from cli import debian, postgres

    env = dict(os.environ)
    # What this command starts, it stops when the tests end (what was already running stays).
    started_postgres = started_broker = False
    try:
        if not env.get("MSP_TEST_DATABASE_URL"):
            started_postgres = not postgres.running(TEST_POSTGRES_PORT)
            env["MSP_TEST_DATABASE_URL"] = postgres.start(TEST_POSTGRES_PORT)
        # A real Alertmanager posts to ingest in the integration tests.
        debian.ensure("prometheus-alertmanager", "prometheus-alertmanager")
        # A real Prometheus scrapes the services; promtool checks and unit-tests the rules.
        debian.ensure("prometheus", "prometheus")
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            cfg = broker.BrokerConfig(port=TEST_BROKER_PORT, var_dir=REPO_ROOT / "var" / "test")
            started_broker = broker.pid_of(cfg) is None
            # Every test declares topics of its own names; kept, they only pile up from run to
            # run (thousands of partitions slow the broker and outgrow its heap). A test broker
            # this command starts starts empty; one already running is used as it is.
            idle = started_broker and not broker.port_open("127.0.0.1", cfg.port)
            if idle and broker.reset_storage(cfg):
                print("[broker] the test broker starts on empty storage (earlier runs' topics dropped)",
                      file=sys.stderr)  # fmt: skip
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.start(cfg)
        rc = subprocess.call([sys.executable, "-m", "pytest", *args.pytest_args], env=env, cwd=REPO_ROOT)
    finally:
        if not args.keep_running:
            _stop_test_infrastructure(broker_too=started_broker, postgres_too=started_postgres)
    if rc == 5:
        print("pytest collected no tests: that is a failure, not a pass", file=sys.stderr)
    return rc


def cmd_eval(args: argparse.Namespace) -> int:
    if args.what == "similar":
        from evals import tickets as eval_tickets

        if not args.data:
            raise ValueError("eval similar needs --data CSV")
        report = eval_tickets.evaluate_similar(
            data=Path(args.data),
            text_col=args.text_col,
            label_col=args.label_col,
            cache=_var(args) / "cache" / "embeddings.sqlite",
        )
        print(json.dumps(report, indent=2))
        return 0
    if args.what == "reasoning":
        from evals import reasoning as eval_reasoning

        if not args.judgement or not args.cases:
            raise ValueError("eval reasoning needs --judgement NAME and --cases FILE.jsonl")
        print(json.dumps(eval_reasoning.evaluate(judgement=args.judgement, cases=Path(args.cases)), indent=2))
        return 0
    if args.what == "candidates":
        from evals import candidates as eval_candidates

        if not args.data:
            raise ValueError("eval candidates needs --data CSV (a ticket history)")
        report = eval_candidates.evaluate(
            data=Path(args.data),
            cache=_var(args) / "cache" / "embeddings.sqlite",
            text_col=args.text_col,
            label_col=args.label_col,
            limit=args.limit,
        )
        print(json.dumps(report, indent=2, default=str))
        return 0
    if args.what == "redaction":
        from evals import redaction as eval_redaction

        report = eval_redaction.evaluate(
            cases=Path(args.cases) if args.cases else None,
            data=Path(args.data) if args.data else None,
            text_col=args.text_col,
            limit=args.limit,
        )
        print(json.dumps(report, indent=2))
        return 0
    if args.what == "plans":
        from evals import plans as eval_plans

        if not args.cases or not args.plans:
            raise ValueError("eval plans needs --cases FILE.jsonl and --plans OUT.jsonl")
        print(json.dumps(eval_plans.evaluate(cases=Path(args.cases), plans=Path(args.plans)), indent=2))
        return 0
    if args.what == "runbooks":
        from evals import runbooks as eval_runbooks

        if not args.docs or not args.queries or not args.rankings:
            raise ValueError("eval runbooks needs --docs DIR, --queries FILE.json and --rankings OUT.jsonl")
        report = eval_runbooks.evaluate(
            docs=Path(args.docs),
            queries=Path(args.queries),
            rankings=Path(args.rankings),
            cache=_var(args) / "cache" / "embeddings.sqlite",
            query_from=args.query_from,
        )
        print(json.dumps(report, indent=2))
        return 0
    if args.what == "tickets":
        from evals import tickets as eval_tickets

        if not args.predictions or not (args.data or (args.train and args.test)):
            raise ValueError(
                "eval tickets needs --data CSV (or --train and --test) and --predictions OUT.csv"
            )
        report = eval_tickets.evaluate(
            data=Path(args.data) if args.data else None,
            train=Path(args.train) if args.train else None,
            test=Path(args.test) if args.test else None,
            text_col=args.text_col,
            label_col=args.label_col,
            predictions=Path(args.predictions),
            cache=_var(args) / "cache" / "embeddings.sqlite",
            few_shot_k=args.few_shot,
        )
        print(json.dumps(report, indent=2))
        return 0
    if args.what == "alarms":
        from evals import alarms as eval_alarms

        if not args.data or not args.assignments:
            raise ValueError("eval alarms needs --data DIR and --assignments OUT.csv")
        if not Path(args.data).exists():
            raise ValueError(f"no alarm data at {args.data}")
        bootstrap = _external_bootstrap() or broker.start(_broker_cfg(args))
        report = eval_alarms.evaluate(
            Path(args.data),
            Path(args.assignments),
            bootstrap,
            rate=args.rate,
            batch=args.batch,
            limit=args.limit,
            keep_logs=Path(args.keep_logs) if args.keep_logs else None,
        )
        print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msp", description=__doc__)
    p.add_argument("--var-dir", help="state folder (default: ./var, or MSP_VAR_DIR)")
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("MSP_BROKER_PORT", "9092")),
        help="port of the project's own broker (default 9092, or MSP_BROKER_PORT)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="the project's own single-node Kafka broker")
    b.add_argument("action", choices=["start", "stop", "status"])
    b.set_defaults(fn=cmd_broker)

    t = sub.add_parser("topics", help="create the declared topics (idempotent)")
    t.add_argument("action", choices=["ensure"])
    t.set_defaults(fn=cmd_topics)

    u = sub.add_parser("up", help="start the broker, the topics and all five services")
    u.add_argument("--demo", action="store_true", help="also replay a small sample of alerts and tickets")
    u.set_defaults(fn=cmd_up)

    sub.add_parser("down", help="stop the services and the broker `up` started").set_defaults(fn=cmd_down)

    s = sub.add_parser("status", help="what runs, whether it is ready, and event counts")
    s.add_argument("--tenant", help="tenant whose counts to show (default: the latest demo run's)")
    s.set_defaults(fn=cmd_status)

    tn = sub.add_parser("tenant", help="the tenant registry and its source mappings")
    tn.add_argument("action", choices=["add", "map", "show"])
    tn.add_argument("tenant_id", help="the tenant ('all' with show lists every tenant)")
    tn.add_argument("--name")
    tn.add_argument("--source", help="with map: the source system (connectwise, datto-rmm, ...)")
    tn.add_argument("--external-id", help="with map: the PSA company or RMM site id in that source")
    tn.add_argument("--ingest-url", help="the ingest service (default: the local one)")
    tn.set_defaults(fn=cmd_tenant)

    k = sub.add_parser("key", help="sender keys of a tenant")
    k.add_argument("action", choices=["issue", "list", "revoke"])
    k.add_argument("--tenant", required=True)
    k.add_argument("--role", default="integration", choices=["integration", "engineer", "approver", "admin"])
    k.add_argument("--label", default="")
    k.add_argument("--key-id")
    k.add_argument("--ingest-url", help="the ingest service (default: the local one)")
    k.set_defaults(fn=cmd_key)

    pl = sub.add_parser(
        "plan", help="turn an instruction into a plan of actions; confirm, approve or reject it"
    )
    pl.add_argument("action", choices=["new", "show", "confirm", "approve", "reject"])
    pl.add_argument("target", help="new: the instruction; otherwise the plan id")
    pl.add_argument("--tenant", required=True)
    pl.add_argument("--ticket-id")
    pl.add_argument("--requester")
    pl.add_argument("--device")
    pl.add_argument("--summary")
    pl.add_argument("--reason", help="approve/reject: why (recorded with the decision)")
    pl.add_argument("--key", help="your engineer or approver key (default: MSP_KEY, else the operator token)")
    pl.add_argument("--automation-url", help="the automation service (default: the local one)")
    pl.set_defaults(fn=cmd_plan)

    au = sub.add_parser(
        "automation",
        help="automations of a tenant: approve, pause, resume, retire, runs; candidates, readiness",
    )
    au.add_argument(
        "action",
        choices=["list", "show", "approve", "pause", "resume", "retire", "runs", "candidates", "readiness"],
    )
    au.add_argument("id", nargs="?", help="the automation id (not for list, candidates, readiness)")
    au.add_argument("--tenant", required=True)
    au.add_argument(
        "--version", type=int, help="approve: the version to make live (an earlier one rolls back)"
    )
    au.add_argument("--reason", help="approve/pause/resume/retire: why (recorded)")
    au.add_argument("--refresh", action="store_true", help="candidates/readiness: mine the history now")
    au.add_argument("--key", help="your engineer or approver key (default: MSP_KEY, else the operator token)")
    au.add_argument("--automation-url", help="the automation service (default: the local one)")
    au.set_defaults(fn=cmd_automation)

    rn = sub.add_parser("run", help="show a run's progress step by step")
    rn.add_argument("run_id")
    rn.add_argument("--tenant", required=True)
    rn.add_argument("--watch", action="store_true", help="follow the run until it ends")
    rn.add_argument("--timeout", type=float, default=600.0, help="--watch: give up after this many seconds")
    rn.add_argument("--key", help="your key (default: MSP_KEY, else the operator token)")
    rn.add_argument("--automation-url", help="the automation service (default: the local one)")
    rn.set_defaults(fn=cmd_run)

    kb = sub.add_parser("kb", help="runbooks of a tenant or of the global library (via the packet service)")
    kb.add_argument("action", choices=["add", "remove", "list"])
    kb.add_argument(
        "target", nargs="?", default="", help="add: a folder of Markdown runbooks; remove: a runbook path"
    )
    kb.add_argument("--tenant", help="the tenant whose runbooks these are")
    kb.add_argument("--global", dest="global_library", action="store_true", help="the global library")
    kb.add_argument("--url-base", help="add: runbooks' links are this plus their path")
    kb.add_argument("--packet-url", help="the packet service (default: the local one)")
    kb.set_defaults(fn=cmd_kb)

    ev = sub.add_parser("eval", help="measure the platform on real data (prints JSON)")
    ev.add_argument(
        "what",
        choices=["alarms", "tickets", "similar", "runbooks", "reasoning", "plans", "candidates", "redaction"],
    )
    ev.add_argument(
        "--data",
        help="alarms: the folder with Alarm.csv and DAG.npy; tickets: a labelled CSV; "
        "redaction: tickets without names",
    )
    ev.add_argument("--train", help="tickets: an explicit training CSV (with --test)")
    ev.add_argument("--test", help="tickets: an explicit test CSV")
    ev.add_argument("--text-col", default="Document", help="tickets: the text column")
    ev.add_argument("--label-col", default="Topic_group", help="tickets: the label column")
    ev.add_argument("--predictions", help="tickets: where to write row,label,confidence")
    ev.add_argument("--assignments", help="alarms: where to write row,signal_id")
    ev.add_argument("--rate", type=float, default=5000.0, help="alarms: replayed events per second")
    ev.add_argument("--batch", type=int, default=500, help="alarms: alerts per ingest request")
    ev.add_argument(
        "--few-shot",
        type=int,
        metavar="K",
        help="tickets: keep K training tickets of every class but the largest two (seed 42)",
    )
    ev.add_argument(
        "--limit",
        type=int,
        help="alarms, candidates: only the first N alarms or tickets; redaction: a sample of N tickets",
    )
    ev.add_argument("--keep-logs", help="copy the services' logs into this folder")
    ev.add_argument("--docs", help="runbooks: the folder of Markdown runbooks")
    ev.add_argument(
        "--judgement", help="reasoning: classify, summarise, interpret, extract_steps or analyse_failure"
    )
    ev.add_argument(
        "--cases",
        help="reasoning: JSON lines of {input, expected}; "
        "plans, redaction: {id, instruction, ticket, expected}",
    )
    ev.add_argument("--plans", help="plans: where to write one {id, plan} line per case")
    ev.add_argument(
        "--queries", help="runbooks: the alerts (JSON list with summary, description, runbook_path)"
    )
    ev.add_argument("--rankings", help="runbooks: where to write the ranking per query (JSON lines)")
    ev.add_argument(
        "--query-from",
        choices=["annotations", "expression"],
        default="annotations",
        help="runbooks: ask with each alert's summary and description (default) or with its rule's "
        "expression alone, as an alert without annotations arrives",
    )
    ev.set_defaults(fn=cmd_eval)

    sub.add_parser("lint", help="ruff and mypy, as CI runs them").set_defaults(fn=cmd_lint)
    k8 = sub.add_parser("k8s", help="write the Kubernetes manifests (as code) to k8s/")
    k8.add_argument("--check", action="store_true", help="fail when the written manifests are out of date")
    k8.set_defaults(fn=cmd_k8s)
    da = sub.add_parser(
        "dashboards", help="write the Grafana dashboards (as code) to deploy/grafana/dashboards/"
    )
    da.add_argument("--check", action="store_true", help="fail when the written dashboards are out of date")
    da.set_defaults(fn=cmd_dashboards)

    se = sub.add_parser("secrets", help="write a deployment's secrets file (compose --env-file, Kubernetes)")
    se.add_argument(
        "--env-file", default="deploy/msp.env", help="where (default deploy/msp.env; never overwritten)"
    )
    se.set_defaults(fn=cmd_secrets)
    sub.add_parser(
        "migrate", help="bring every service's tables to their newest revision (MSP_DATABASE_URL)"
    ).set_defaults(fn=cmd_migrate)
    mi = sub.add_parser("migration", help="a service's next migration, generated from its tables")
    mi.add_argument("service", nargs="?", help="the service whose tables changed")
    mi.add_argument("message", nargs="?", help="what the change is (the revision's docstring)")
    mi.add_argument("--check", action="store_true", help="fail when tables and migrations disagree")
    mi.set_defaults(fn=cmd_migration)

    te = sub.add_parser("test", help="start PostgreSQL and the broker, run pytest, stop what it started")
    te.add_argument(
        "--keep-running", action="store_true", help="leave the test broker and PostgreSQL running afterwards"
    )
    te.add_argument("pytest_args", nargs=argparse.REMAINDER)
    te.set_defaults(fn=cmd_test)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    # Everything `msp test` does not know is pytest's (options such as -q or -k included).
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command != "test":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.pytest_args = [*unknown, *args.pytest_args]
    # aiokafka logs every refused connection while a broker starts; the CLI says it once.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        sys.exit(args.fn(args))
    except (broker.BrokerError, ApiError, ValueError, RuntimeError) as exc:
        print(f"msp {args.command}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
