"""Posting a packet into the tenant's PSA as an internal note: rendering (Markdown or HTML) and
one writer per PSA. The writers add internal notes and, when a tenant's rollout mode for a
category is `auto`, set the category ticket triage decided; nothing here closes a ticket, mails
a client, changes an SLA or runs anything.

Each note carries a marker with the packet id and version (`msp-packet:<id>:v<n>`), so an
engineer, or a reconciliation job, can tell a repost apart; the service itself posts a version
once (deliveries are keyed by packet id and version).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from libs.common.events import Claim, EscalationPacketPayload
from services.packet import pages

KINDS = ("connectwise", "autotask", "halopsa", "webhook")
PARTS = (
    ("summary", "Summary"),
    ("related_alerts", "Related alerts"),
    ("runbook", "Runbook"),
    ("already_tried", "Already tried"),
    ("similar_cases", "Similar cases"),
)


class DeliveryError(Exception):
    """The PSA refused or failed; `retry` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def marker(p: EscalationPacketPayload) -> str:
    return f"msp-packet:{p.packet_id}:v{p.version}"


class Note:
    """What is posted into a ticket: an escalation packet version, or a note an automation
    step asked for (`psa.add_note`). Its marker is in its text, so it can be found again.
    Each form (Markdown, HTML, the webhook's JSON) is rendered when a PSA asks for it, once."""

    def __init__(
        self,
        marker: str,
        title: str,
        markdown: Callable[[], str],
        html: Callable[[], str],
        webhook: Callable[[], dict[str, Any]],
    ) -> None:
        self.marker = marker
        self.title = title
        self._markdown, self._html, self._webhook = markdown, html, webhook

    @functools.cached_property
    def markdown(self) -> str:
        return self._markdown()

    @functools.cached_property
    def html(self) -> str:
        return self._html()

    @functools.cached_property
    def webhook(self) -> dict[str, Any]:
        return self._webhook()


def packet_note(p: EscalationPacketPayload, page_url: str | None = None) -> Note:
    return Note(
        marker=marker(p),
        title=f"Escalation packet v{p.version}",
        markdown=lambda: render_markdown(p, page_url),
        html=lambda: render_html(p, page_url),
        webhook=lambda: {"packet": p.model_dump(mode="json")},
    )


def action_note(key: str, text: str, run_id: str, requested_by: str) -> Note:
    """A note an engineer's run wrote (`psa.add_note`), marked with its step's key."""
    mark = f"msp-action:{key}"
    return Note(
        marker=mark,
        title="Note from the MSP platform",
        markdown=lambda: f"{text}\n\n_Added by the MSP platform for {requested_by} (run {run_id})._\n{mark}",
        html=lambda: pages.render(
            "action_note.html", text=text, requested_by=requested_by, run_id=run_id, mark=mark
        ),
        webhook=lambda: {"action_note": {"text": text, "run_id": run_id, "requested_by": requested_by}},
    )


def _note(p: EscalationPacketPayload | Note, page_url: str | None) -> Note:
    return p if isinstance(p, Note) else packet_note(p, page_url)


def _cites(c: Claim) -> str:
    return ", ".join(f"{s.kind} {s.id}" for s in c.sources)


def render_markdown(p: EscalationPacketPayload, page_url: str | None = None) -> str:
    lines = [f"**Escalation packet** v{p.version} for ticket {p.ticket_id}", ""]
    for field, title in PARTS:
        claims: list[Claim] = getattr(p, field)
        if not claims:
            continue
        lines.append(f"**{title}**")
        for c in claims:
            link = next((s.url for s in c.sources if s.url), None)
            cite = f"[{_cites(c)}]({link})" if link else _cites(c)
            lines.append(f"- {c.text} _(confidence {c.confidence:.2f}; {cite})_")
        lines.append("")
    if p.still_unknown:
        lines.append("**Still unknown**")
        lines += [f"- {u.text} _(missing: {u.missing_evidence})_" for u in p.still_unknown]
        lines.append("")
    if page_url:
        lines.append(f"Full packet: {page_url}")
    lines.append(marker(p))
    return "\n".join(lines)


def render_html(
    p: EscalationPacketPayload, page_url: str | None = None, link: Callable[[str], str] = str
) -> str:
    """The packet as HTML; `link` maps each source URL to the one shown (the packet page signs
    links into the platform's own pages)."""
    return pages.render("note.html", **note_context(p, page_url, link))


def note_context(
    p: EscalationPacketPayload, page_url: str | None = None, link: Callable[[str], str] = str
) -> dict[str, Any]:
    """What `templates/note.html` shows of a packet."""
    return {
        "p": p,
        "parts": [(title, getattr(p, field)) for field, title in PARTS],
        "page_url": page_url,
        "link": link,
        "marker": marker(p),
    }


@dataclass(frozen=True)
class Target:
    kind: str
    base_url: str
    credentials: dict[str, Any]
    options: dict[str, Any]


def auth_headers(target: Target) -> dict[str, str]:
    """The PSA's credentials as its API takes them (the same for posting and for listing)."""
    c = target.credentials
    if target.kind == "connectwise":
        auth = base64.b64encode(f"{c['company']}+{c['public_key']}:{c['private_key']}".encode()).decode()
        return {"Authorization": f"Basic {auth}", "clientId": str(c.get("client_id", ""))}
    if target.kind == "autotask":
        return {
            "ApiIntegrationCode": str(c["integration_code"]),
            "UserName": str(c["username"]),
            "Secret": str(c["secret"]),
        }
    if target.kind == "halopsa":
        return {"Authorization": f"Bearer {c['token']}"}
    return {}


def request_for(
    target: Target,
    tenant_id: str,
    ticket_id: str,
    p: EscalationPacketPayload | Note,
    page_url: str | None = None,
) -> tuple[str, dict[str, str], Any]:
    """(URL, headers, JSON body) of the call that adds the note (a packet, or an automation
    step's note) to the ticket, internal only."""
    c, base = target.credentials, target.base_url.rstrip("/")
    note = _note(p, page_url)
    if target.kind == "connectwise":
        return (
            f"{base}/v4_6_release/apis/3.0/service/tickets/{ticket_id}/notes",
            auth_headers(target),
            {
                "text": note.markdown,
                "detailDescriptionFlag": False,
                "internalAnalysisFlag": True,
                "resolutionFlag": False,
            },
        )
    if target.kind == "autotask":
        return (
            f"{base}/ATServicesRest/V1.0/Tickets/{ticket_id}/Notes",
            auth_headers(target),
            {
                "ticketID": int(ticket_id) if ticket_id.isdigit() else ticket_id,
                "title": note.title,
                "description": note.markdown,
                "noteType": int(target.options.get("note_type", 1)),
                # The tenant's picklist value for an internal-only note.
                "publish": int(target.options.get("publish", 2)),
            },
        )
    if target.kind == "halopsa":
        return (
            f"{base}/api/Actions",
            auth_headers(target),
            [
                {
                    "ticket_id": int(ticket_id) if ticket_id.isdigit() else ticket_id,
                    "outcome": str(target.options.get("outcome", "Private Note")),
                    "note_html": note.html,
                    "hiddenfromuser": True,
                }
            ],
        )
    if target.kind == "webhook":
        body = {
            "tenant_id": tenant_id,
            "ticket_id": ticket_id,
            **note.webhook,
            "markdown": note.markdown,
            "html": note.html,
            "internal": True,
        }
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True)
        headers = {"Content-Type": "application/json"}
        if c.get("secret"):
            sig = hmac.new(str(c["secret"]).encode(), raw.encode(), hashlib.sha256).hexdigest()
            headers["X-MSP-Signature"] = f"sha256={sig}"
        return base, headers, body
    raise ValueError(f"unknown PSA kind {target.kind!r} (known: {', '.join(KINDS)})")


async def find_posted(
    client: httpx.AsyncClient, target: Target, ticket_id: str, p: EscalationPacketPayload | Note
) -> str | None:
    """The PSA's id of this version's note when the ticket already has it (looked up by its
    marker), else None. Asked before posting again a version whose earlier attempt may have
    reached the PSA (a crash or a timeout between the post and its record). A generic webhook
    cannot be asked: its receiver deduplicates on the `Idempotency-Key` header instead."""
    base, headers = target.base_url.rstrip("/"), auth_headers(target)
    mark = p.marker if isinstance(p, Note) else marker(p)
    if target.kind == "connectwise":
        url = f"{base}/v4_6_release/apis/3.0/service/tickets/{ticket_id}/notes"
        params: dict[str, Any] = {"conditions": f'text like "%{mark}%"', "fields": "id,text", "pageSize": 100}
        text_of, items_of = "text", (lambda doc: doc)
    elif target.kind == "autotask":
        url = f"{base}/ATServicesRest/V1.0/Tickets/{ticket_id}/Notes"
        params = {}
        text_of, items_of = "description", (lambda doc: doc.get("items", []))
    elif target.kind == "halopsa":
        url = f"{base}/api/Actions"
        params = {"ticket_id": ticket_id, "count": 200}
        text_of, items_of = "note_html", (lambda doc: doc.get("actions", []))
    else:
        return None
    try:
        r = await client.get(url, headers=headers, params=params)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"looking for the note: {type(exc).__name__}: {exc}", retry=True) from exc
    if r.status_code >= 400:
        raise DeliveryError(
            f"looking for the note: HTTP {r.status_code}: {r.text[:300]}", retry=r.status_code >= 500
        )
    for item in items_of(r.json()) or []:
        if isinstance(item, dict) and mark in str(item.get(text_of) or ""):
            return str(item.get("id")) if item.get("id") is not None else ""
    return None


async def post(
    client: httpx.AsyncClient,
    target: Target,
    tenant_id: str,
    ticket_id: str,
    p: EscalationPacketPayload | Note,
    page_url: str | None,
) -> str | None:
    """Post the note; returns the PSA's id for it when it says one."""
    note = _note(p, page_url)
    url, headers, body = request_for(target, tenant_id, ticket_id, note)
    answer = await _send(client, "POST", url, {**headers, "Idempotency-Key": note.marker}, body)
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if isinstance(answer, dict):
        for key in ("id", "itemId", "noteId"):
            if answer.get(key) is not None:
                return str(answer[key])
    return None


# --- setting a ticket's category (rollout mode `auto`) ---------------------------------------


def category_request(
    target: Target, tenant_id: str, ticket_id: str, category: str, decision: dict[str, Any]
) -> tuple[str, str, dict[str, str], Any]:
    """(method, URL, headers, JSON body) of the call that sets the ticket's category. Setting a
    field to a value is idempotent, so a retry after a crash between the call and its record
    changes nothing. Where the PSA keys categories by id (Autotask's picklists always; the
    others when the target says so), `options.category_ids` maps the platform's label to it."""
    base, opts = target.base_url.rstrip("/"), target.options
    ids: dict[str, Any] = opts.get("category_ids") or {}
    number = int(ticket_id) if ticket_id.isdigit() else ticket_id
    if target.kind == "connectwise":
        value = {"id": ids[category]} if category in ids else {"name": category}
        field = str(opts.get("category_field", "type"))
        return (
            "PATCH",
            f"{base}/v4_6_release/apis/3.0/service/tickets/{ticket_id}",
            auth_headers(target),
            [{"op": "replace", "path": field, "value": value}],
        )
    if target.kind == "autotask":
        if category not in ids:
            raise DeliveryError(
                f"Autotask keeps categories as picklist values: the target's options.category_ids "
                f"has no value for {category!r}",
                retry=False,
            )
        field = str(opts.get("category_field", "issueType"))
        return (
            "PATCH",
            f"{base}/ATServicesRest/V1.0/Tickets",
            auth_headers(target),
            {"id": number, field: ids[category]},
        )
    if target.kind == "halopsa":
        field = str(opts.get("category_field", "category_1"))
        return (
            "POST",
            f"{base}/api/Tickets",
            auth_headers(target),
            [{"id": number, field: ids.get(category, category)}],
        )
    if target.kind == "webhook":
        body = {
            "tenant_id": tenant_id,
            "ticket_id": ticket_id,
            "set_category": {"category": category, **decision},
        }
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True)
        headers = {"Content-Type": "application/json"}
        secret = target.credentials.get("secret")
        if secret:
            sig = hmac.new(str(secret).encode(), raw.encode(), hashlib.sha256).hexdigest()
            headers["X-MSP-Signature"] = f"sha256={sig}"
        return "POST", base, headers, body
    raise ValueError(f"unknown PSA kind {target.kind!r} (known: {', '.join(KINDS)})")


async def set_category(
    client: httpx.AsyncClient,
    target: Target,
    tenant_id: str,
    ticket_id: str,
    category: str,
    decision: dict[str, Any],
    key: str,
) -> None:
    method, url, headers, body = category_request(target, tenant_id, ticket_id, category, decision)
    await _send(client, method, url, {**headers, "Idempotency-Key": key}, body)


async def _send(client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], body: Any) -> Any:
    """One call to the PSA; a refusal worth retrying (5xx, 408, 409, 425, 429, no answer) and
    one that is not are told apart. Returns the parsed answer, or None."""
    try:
        r = await client.request(method, url, headers=headers, json=body)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}", retry=True) from exc
    if r.status_code >= 500 or r.status_code in (408, 409, 425, 429):
        raise DeliveryError(f"HTTP {r.status_code}: {r.text[:300]}", retry=True)
    if r.status_code >= 400:
        raise DeliveryError(f"HTTP {r.status_code}: {r.text[:300]}", retry=False)
    try:
        return r.json()
    except ValueError:
        return None
