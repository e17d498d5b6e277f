"""Alert clustering for one tenant: alerts in, signal changes out. Pure logic, no I/O.

How an alert finds its signal, in order (the first that applies wins; each records *why*):

1. **fingerprint**: a live signal already holds the same fingerprint: the alert folds into it
   (counted, last seen updated). A fingerprint that fires again after resolving, repeatedly
   within `flap_window_s`, marks the signal flapping instead of opening anything.
2. **group_key**: the source already grouped it (Alertmanager `groupKey`) with a live signal.
3. **device**: a live signal with recent alerts on the same device whose templates the new
   alert is linked with (same template, or a learned correlation), for at least `join_share`
   of those templates.
4. **site / topology**: a live signal with an alert of the same or a linked template on another
   device of the same site, or on the device's declared parent, within `site_window_s`.
5. Otherwise the alert opens a signal. At the end of each micro-batch, the new signals of the
   batch that share a site are clustered with HDBSCAN on their template embeddings; each
   cluster found is merged into its earliest signal (the others are marked `merged`).

Signals resolve when all their alerts have resolved and stayed so for `resolve_hold_s` (a
flapping signal waits for `join_gap_s`), or after `quiet_resolve_s` without any alert. Event
time drives every window, so a replay of old alerts groups as it would have live.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast

import numpy as np

from libs.common.events import AlertReceived, GroupingReason, Severity, SignalAlert, SignalPayload
from services.triage.alerts.correlation import CorrelationLearner
from services.triage.alerts.templates import rule_of, template_of

log = logging.getLogger(__name__)

Detail = str | Callable[[], str]
SignalState = Literal["opened", "updated", "merged", "resolved"]
SEVERITY_RANK = {"info": 0, "low": 1, "warning": 2, "high": 3, "critical": 4}
SIGNAL_NAMESPACE = uuid.UUID("5b0f1c52-9a53-4c43-8f7c-0d1f2a3b4c5d")


@dataclass(frozen=True)
class ClusterConfig:
    join_gap_s: float = 7200.0
    recent_s: float = 3600.0
    join_share: float = 0.8
    site_window_s: float = 600.0
    resolve_hold_s: float = 300.0
    quiet_resolve_s: float = 86400.0
    flap_window_s: float = 3600.0
    flap_refires: int = 2
    flap_gap_s: float = 300.0
    correlation_window_s: float = 1800.0
    min_lift: float = 1.0
    min_support: int = 5
    hdbscan_min_seeds: int = 3
    hdbscan_max_seeds: int = 256
    max_ids_in_event: int = 10
    dedup_memory: int = 50_000


@dataclass
class Member:
    """One fingerprint inside a signal."""

    fingerprint: str
    template: int
    device: str | None
    site: str | None
    last_active: float
    active: list[float] = field(default_factory=list)  # start times of occurrences still firing
    refires: list[float] = field(default_factory=list)
    rule: str | None = None  # the source's rule name, when the alert carries one

    @property
    def firing(self) -> bool:
        return bool(self.active)


@dataclass
class Signal:
    signal_id: str
    title: str
    first_seen: float
    last_seen: float
    last_activity: float
    severity: str
    members: dict[str, Member] = field(default_factory=dict)
    recent_ids: list[str] = field(default_factory=list)
    # The same recent alerts as they were sent: [id, title, device, severity, rule, url, time].
    recent_alerts: list[list[Any]] = field(default_factory=list)
    count: int = 0
    devices: dict[str, int] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)
    group_keys: list[str] = field(default_factory=list)
    reasons: dict[str, list[Any]] = field(default_factory=dict)  # "feature|detail" -> [feature, detail, w]
    weight_sum: float = 0.0
    flapping: bool = False
    status: str = "open"  # open | resolved | merged
    all_resolved_at: float | None = None
    revision: int = 0
    merged_into: str | None = None
    # What changed since the last published revision, and when that was (wall clock).
    added: list[str] = field(default_factory=list)
    pending: str | None = None
    published_at: float = 0.0

    @property
    def confidence(self) -> float:
        return round(self.weight_sum / self.count, 3) if self.count else 1.0

    def to_state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("members", "published_at")}
        state["members"] = [m.__dict__ for m in self.members.values()]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Signal:
        members = {m["fingerprint"]: Member(**m) for m in state["members"]}
        return cls(**{**state, "members": members})


@dataclass(frozen=True)
class Change:
    """A signal revision due to be published."""

    signal: Signal
    state: str
    added: list[str]
    revision: int


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _human(template: str) -> str:
    return template.replace("<NUM>", "N").replace("<ID>", "…")


class TenantClusterer:
    """All live signals of one tenant, and its learned correlations."""

    def __init__(
        self,
        tenant_id: str,
        config: ClusterConfig,
        embed: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.config = config
        self.embed = embed
        self.learner = CorrelationLearner(
            window_s=config.correlation_window_s, min_lift=config.min_lift, min_support=config.min_support
        )
        self.templates: dict[str, int] = {}
        self.template_names: list[str] = []
        self.signals: dict[str, Signal] = {}
        self.by_fingerprint: dict[str, str] = {}
        self.by_group_key: dict[str, str] = {}
        # dicts used as insertion-ordered sets: ties go to the oldest signal, deterministically
        self.by_device: dict[str, dict[str, None]] = {}
        self.by_site: dict[str, dict[str, None]] = {}
        self.by_occurrence: dict[tuple[str, float], str] = {}  # (fingerprint, start) -> signal id
        self.seen_alerts: dict[str, str] = {}  # alert id -> signal id, most recent first out
        self.clock = 0.0
        self._batch_seeds: list[str] = []
        self.last_grouping = 0.0  # wall clock of the last new-group detection
        self.learner_dirty = False
        self.dirty: set[str] = set()  # signals changed since the state was last written
        # Revision numbers reserved for signals this instance has not restored (see restore).
        self.revision_floor: dict[str, int] = {}
        self.forgotten: list[str] = []  # signals dropped from memory since then
        # The immutable parts of published revisions (an alert as described, a grouping reason,
        # an alert id), built once for the revisions that repeat them (see `signal_payload`).
        # This tenant's own: nothing built from one tenant's alerts is shown to another.
        self._parts: dict[Any, Any] = {}

    # --- indexes ------------------------------------------------------------------------

    def _template_id(self, template: str) -> int:
        tid = self.templates.get(template)
        if tid is None:
            tid = self.templates[template] = len(self.template_names)
            self.template_names.append(template)
        return tid

    def _index(self, sig: Signal, member: Member, group_key: str | None) -> None:
        self.by_fingerprint[member.fingerprint] = sig.signal_id
        if group_key:
            self.by_group_key[group_key] = sig.signal_id
        if member.device:
            self.by_device.setdefault(member.device, {})[sig.signal_id] = None
        if member.site:
            self.by_site.setdefault(member.site, {})[sig.signal_id] = None

    def _unindex(self, sig: Signal) -> None:
        for fp, m in sig.members.items():
            if self.by_fingerprint.get(fp) == sig.signal_id:
                del self.by_fingerprint[fp]
            for start in m.active:
                if self.by_occurrence.get((fp, start)) == sig.signal_id:
                    del self.by_occurrence[(fp, start)]
            if m.device:
                self.by_device.get(m.device, {}).pop(sig.signal_id, None)
            if m.site:
                self.by_site.get(m.site, {}).pop(sig.signal_id, None)
        for gk in sig.group_keys:
            if self.by_group_key.get(gk) == sig.signal_id:
                del self.by_group_key[gk]

    def _live(self, signal_id: str | None, t: float) -> Signal | None:
        if signal_id is None:
            return None
        sig = self.signals.get(signal_id)
        if sig is None or sig.status == "merged":
            return None
        if t - sig.last_activity > self.config.join_gap_s and not self._any_firing(sig):
            return None
        return sig

    @staticmethod
    def _any_firing(sig: Signal) -> bool:
        return any(m.active for m in sig.members.values())

    # --- the work -----------------------------------------------------------------------

    def add(self, event: AlertReceived) -> Signal | None:
        """Take one alert; returns the signal it changed (None for a redelivered alert)."""
        alert_id = str(event.event_id)
        if alert_id in self.seen_alerts:
            return None
        a = event.payload
        t = event.occurred_at.timestamp()
        self.clock = max(self.clock, t)
        template = self._template_id(template_of(a))
        if a.status == "resolved":
            sig = self._resolve(a.fingerprint, a.starts_at.timestamp() if a.starts_at else None, t)
        else:
            # Co-occurrence on the most specific scope the alert names: its device, else its site.
            scope = f"d:{a.device}" if a.device else f"s:{a.site}" if a.site else None
            if scope:
                self.learner.observe(template, (scope,), t)
                self.learner_dirty = True
            sig = self._fire(event, template, t)
        if sig is not None:
            self._remember(alert_id, sig.signal_id)
            sig.added.append(alert_id)
        return sig

    def _remember(self, alert_id: str, signal_id: str) -> None:
        self.seen_alerts[alert_id] = signal_id
        if len(self.seen_alerts) > self.config.dedup_memory:
            del self.seen_alerts[next(iter(self.seen_alerts))]

    def _resolve(self, fingerprint: str, start: float | None, t: float) -> Signal | None:
        sig_id = self.by_occurrence.pop((fingerprint, start), None) if start is not None else None
        sig_id = sig_id or self.by_fingerprint.get(fingerprint)
        sig = self.signals.get(sig_id) if sig_id else None
        while sig is not None and sig.status == "merged" and sig.merged_into:
            sig = self.signals.get(sig.merged_into)
        if sig is None or fingerprint not in sig.members:
            return None
        member = sig.members[fingerprint]
        if member.firing:
            if start is not None and start in member.active:
                member.active.remove(start)
            else:  # a resolution that names no occurrence ends them all
                for s in member.active:
                    self.by_occurrence.pop((fingerprint, s), None)
                member.active = []
            member.last_active = max(member.last_active, t)
            sig.last_activity = max(sig.last_activity, t)
            if not self._any_firing(sig):
                sig.all_resolved_at = t
            sig.pending = sig.pending or "updated"
            self.dirty.add(sig.signal_id)
        return sig

    def _fire(self, event: AlertReceived, template: int, t: float) -> Signal:
        a = event.payload
        cfg = self.config
        # 1. the same fingerprint in a live signal: fold
        sig = self._live(self.by_fingerprint.get(a.fingerprint), t)
        member = sig.members[a.fingerprint] if sig is not None else None
        # A repeat while it still fires is a duplicate; a re-fire soon after resolving is a flap.
        # A re-fire after a real pause is a new occurrence and is grouped on its merits.
        if (
            sig is not None
            and member is not None
            and (member.firing or t - member.last_active <= cfg.flap_gap_s)
        ):
            if not member.firing:
                member.refires = [r for r in member.refires if t - r <= cfg.flap_window_s] + [t]
                if len(member.refires) >= cfg.flap_refires and not sig.flapping:
                    sig.flapping = True
                    fp = a.fingerprint
                    self._reason(
                        sig, "fingerprint", f"flap:{fp}", lambda: f"{fp} is flapping (fire/resolve/fire)", 1.0
                    )
            fp = a.fingerprint
            self._join(sig, event, template, t, 1.0, ("fingerprint", fp, lambda: f"repeats of {fp} folded"))
            return sig
        # 2. the source's own grouping
        if a.group_key:
            sig = self._live(self.by_group_key.get(a.group_key), t)
            if sig is not None:
                gk = a.group_key
                self._join(
                    sig, event, template, t, 0.95, ("group_key", gk, lambda: f"same source group {gk}")
                )
                return sig
        # 3. the same device, linked templates
        if a.device:
            best = self._best_on_device(a.device, template, t)
            if best is not None:
                sig, share, linked = best
                device = a.device
                others = [u for u in linked if u != template]
                weight = round(0.6 + 0.4 * share, 3)
                if others:
                    names = self.template_names

                    def detail() -> str:
                        related = ", ".join(_human(names[u]) for u in others[:3])
                        return f"{_human(names[template])} co-occurs with {related} on {device}"

                    linked_by = ("learned_correlation", f"{template}:{device}", detail)
                else:
                    linked_by = ("template", device, lambda: f"same alert type as recent alerts on {device}")
                self._join(
                    sig,
                    event,
                    template,
                    t,
                    weight,
                    ("device", device, lambda: f"same device {device}"),
                    linked_by,
                )
                return sig
        # 4. the same site (or the declared parent device), another device
        parent = a.labels.get("parent") or a.labels.get("upstream")
        for scope_key, feature in ((a.site, "site"), (parent, "topology")):
            if not scope_key:
                continue
            sig = self._best_on_scope(scope_key, feature, template, t)
            if sig is not None:
                why = (
                    f"same site {scope_key}, related alert within {int(cfg.site_window_s)} s"
                    if feature == "site"
                    else f"alert on upstream device {scope_key}"
                )
                self._join(sig, event, template, t, 0.8, (feature, scope_key, why))
                return sig
        # 5. a new signal
        return self._open(event, template, t)

    def _recent_templates(self, sig: Signal, t: float, device: str | None = None) -> set[int]:
        horizon = t - self.config.recent_s
        return {
            m.template
            for m in sig.members.values()
            if (device is None or m.device == device) and (m.active or m.last_active >= horizon)
        }

    def _best_on_device(self, device: str, template: int, t: float) -> tuple[Signal, float, list[int]] | None:
        best: tuple[Signal, float, list[int]] | None = None
        for sid in self.by_device.get(device, ()):
            sig = self._live(sid, t)
            if sig is None:
                continue
            recent = self._recent_templates(sig, t, device)
            if not recent:
                continue
            linked = [u for u in recent if self.learner.linked(template, u)]
            share = len(linked) / len(recent)
            if not linked or share < self.config.join_share:
                continue
            if best is None or share > best[1]:
                best = (sig, share, linked)
        return best

    def _best_on_scope(self, key: str, feature: str, template: int, t: float) -> Signal | None:
        ids = self.by_site.get(key, ()) if feature == "site" else self.by_device.get(key, ())
        best: Signal | None = None
        for sid in ids:
            sig = self._live(sid, t)
            if sig is None or t - sig.last_seen > self.config.site_window_s:
                continue
            if any(self.learner.linked(template, u) for u in self._recent_templates(sig, t)):
                if best is None or sig.last_seen > best.last_seen:
                    best = sig
        return best

    def _open(self, event: AlertReceived, template: int, t: float) -> Signal:
        a = event.payload
        sig = Signal(
            signal_id=str(uuid.uuid5(SIGNAL_NAMESPACE, f"{self.tenant_id}\x1f{event.event_id}")),
            title=a.title + (f" on {a.device}" if a.device and a.device not in a.title else ""),
            first_seen=t,
            last_seen=t,
            last_activity=t,
            severity=a.severity,
            pending="opened",
        )
        sig.revision = self.revision_floor.get(sig.signal_id, 0)
        self.signals[sig.signal_id] = sig
        self._join(sig, event, template, t, 1.0)
        self._batch_seeds.append(sig.signal_id)
        return sig

    def _reason(self, sig: Signal, feature: str, key: str, detail: Detail, weight: float) -> None:
        """Record why an alert joined; a text given as a function is built only for a reason
        not yet recorded."""
        k = f"{feature}|{key}"
        found = sig.reasons.get(k)
        if found is not None:
            if weight > found[2]:
                found[2] = weight
        elif len(sig.reasons) < 20:
            sig.reasons[k] = [feature, detail() if callable(detail) else detail, weight]

    def _join(
        self,
        sig: Signal,
        event: AlertReceived,
        template: int,
        t: float,
        weight: float,
        *reasons: tuple[str, str, Detail],
    ) -> None:
        a = event.payload
        member = sig.members.get(a.fingerprint)
        if member is None:
            member = sig.members[a.fingerprint] = Member(
                fingerprint=a.fingerprint,
                template=template,
                device=a.device,
                site=a.site,
                last_active=t,
                rule=rule_of(a),
            )
        start = a.starts_at.timestamp() if a.starts_at else t
        if start not in member.active:
            member.active.append(start)
        self.by_occurrence[(a.fingerprint, start)] = sig.signal_id
        member.last_active = max(member.last_active, t)
        self._index(sig, member, a.group_key)
        sig.count += 1
        sig.weight_sum += weight
        for feature, key, detail in reasons:
            self._reason(sig, feature, key, detail, weight)
        sig.last_seen = max(sig.last_seen, t)
        sig.first_seen = min(sig.first_seen, t)
        sig.last_activity = max(sig.last_activity, t)
        sig.all_resolved_at = None
        if SEVERITY_RANK[a.severity] > SEVERITY_RANK[sig.severity]:
            sig.severity = a.severity
        if a.device:
            sig.devices[a.device] = sig.devices.get(a.device, 0) + 1
        if a.site and a.site not in sig.sites:
            sig.sites.append(a.site)
        if a.group_key and a.group_key not in sig.group_keys:
            sig.group_keys.append(a.group_key)
        sig.recent_ids.append(str(event.event_id))
        sig.recent_alerts.append([str(event.event_id), a.title, a.device, a.severity, member.rule, a.url, t])
        keep = self.config.max_ids_in_event
        if len(sig.recent_ids) > keep:
            del sig.recent_ids[: len(sig.recent_ids) - keep]
        if len(sig.recent_alerts) > keep:
            del sig.recent_alerts[: len(sig.recent_alerts) - keep]
        if sig.status == "resolved":
            sig.status = "open"
        if sig.pending is None:
            sig.pending = "updated"
        self.dirty.add(sig.signal_id)

    # --- end of a micro-batch -------------------------------------------------------------

    def merge_new_groups(self, *, enabled: bool = True) -> None:
        """HDBSCAN over the signals opened since the last call that share a site: each cluster
        of similar templates becomes one signal. Not `enabled` (the embedding model is still
        loading), the seeds are let go: they stay signals of their own."""
        seeds, self._batch_seeds = self._batch_seeds, []
        if not enabled or self.embed is None:
            return
        by_site: dict[str, list[Signal]] = {}
        for sid in seeds:
            sig = self.signals.get(sid)
            if sig is not None and sig.status == "open" and sig.sites:
                by_site.setdefault(sig.sites[0], []).append(sig)
        for site, group in by_site.items():
            if len(group) < self.config.hdbscan_min_seeds:
                continue
            group = group[-self.config.hdbscan_max_seeds :]
            try:
                labels = cluster_templates(
                    self.embed([self._seed_text(s) for s in group]),
                    [s.first_seen for s in group],
                    self.config.site_window_s,
                )
            except Exception:  # noqa: BLE001 - new-group detection is a refinement, never a stop
                log.exception("new-group detection failed for a micro-batch; signals stay as they are")
                continue
            clusters: dict[int, list[Signal]] = {}
            for sig, label in zip(group, labels, strict=True):
                if label >= 0:
                    clusters.setdefault(int(label), []).append(sig)
            for members in clusters.values():
                members.sort(key=lambda s: (s.first_seen, s.signal_id))
                for other in members[1:]:
                    self._merge(members[0], other, site)

    def _seed_text(self, sig: Signal) -> str:
        member = next(iter(sig.members.values()))
        return _human(self.template_names[member.template])

    def _merge(self, into: Signal, other: Signal, site: str) -> None:
        self._unindex(other)
        for fp, m in other.members.items():
            kept = into.members.setdefault(fp, m)
            if kept is not m:
                kept.active = sorted(set(kept.active) | set(m.active))
            self._index(into, kept, None)
            for start in m.active:
                self.by_occurrence[(fp, start)] = into.signal_id
        for gk in other.group_keys:
            if gk not in into.group_keys:
                into.group_keys.append(gk)
            self.by_group_key[gk] = into.signal_id
        for d, n in other.devices.items():
            into.devices[d] = into.devices.get(d, 0) + n
        into.count += other.count
        into.weight_sum += other.weight_sum * 0.85
        into.first_seen = min(into.first_seen, other.first_seen)
        into.last_seen = max(into.last_seen, other.last_seen)
        into.last_activity = max(into.last_activity, other.last_activity)
        if SEVERITY_RANK[other.severity] > SEVERITY_RANK[into.severity]:
            into.severity = other.severity
        into.recent_ids = (into.recent_ids + other.recent_ids)[-self.config.max_ids_in_event :]
        into.recent_alerts = sorted(into.recent_alerts + other.recent_alerts, key=lambda r: r[6])[
            -self.config.max_ids_in_event :
        ]
        into.added.extend(other.added)
        for aid in other.added:
            self.seen_alerts[aid] = into.signal_id
        self._reason(
            into,
            "template",
            f"hdbscan:{site}",
            lambda: f"similar alert text on devices of site {site} (HDBSCAN)",
            0.85,
        )
        into.pending = into.pending or "updated"
        other.status = "merged"
        other.merged_into = into.signal_id
        other.pending = "merged"
        self.dirty.update((into.signal_id, other.signal_id))
        other.added = []

    def sweep(self, now: float) -> None:
        """Resolve what has resolved or gone quiet; forget what can no longer take alerts."""
        cfg = self.config
        for sid in list(self.signals):
            sig = self.signals[sid]
            if sig.status == "merged":
                if sig.pending is None:
                    self._forget(sig)
                continue
            if sig.status == "open":
                firing = self._any_firing(sig)
                hold = cfg.join_gap_s if sig.flapping else cfg.resolve_hold_s
                if (not firing and sig.all_resolved_at is not None and now - sig.all_resolved_at >= hold) or (
                    now - sig.last_seen >= cfg.quiet_resolve_s
                ):
                    sig.status = "resolved"
                    sig.pending = "resolved"
                    self.dirty.add(sig.signal_id)
            elif sig.pending is None and now - sig.last_activity > cfg.join_gap_s:
                self._forget(sig)

    def _forget(self, sig: Signal) -> None:
        self._unindex(sig)
        del self.signals[sig.signal_id]
        self.dirty.discard(sig.signal_id)
        self.forgotten.append(sig.signal_id)

    def take_forgotten(self) -> list[str]:
        out, self.forgotten = self.forgotten, []
        return out

    def open_count(self) -> int:
        return sum(1 for s in self.signals.values() if s.status == "open")

    def due_changes(self, now: float = 0.0, update_every_s: float = 0.0) -> list[Change]:
        """Each changed signal once, with the revision it is to be published as, its state and
        the alerts it took since its last revision; nothing is marked until the caller says the
        revisions went out (`published`) or did not (`not_published`). Opening, resolving and
        merging are due at once; a signal that merely grew at most every `update_every_s`
        (wall clock `now`)."""
        out = []
        for sig in self.signals.values():
            if sig.pending is not None:
                if sig.pending == "updated" and now - sig.published_at < update_every_s:
                    continue
                out.append(Change(sig, sig.pending, list(sig.added), sig.revision + 1))
        return out

    def published(self, changes: Iterable[Change], now: float = 0.0) -> None:
        """The revisions are on the topic: what they said is no longer pending."""
        for ch in changes:
            sig = ch.signal
            sig.revision = max(sig.revision, ch.revision)
            sig.published_at = now
            sig.pending = None
            del sig.added[: len(ch.added)]
            self.dirty.add(sig.signal_id)

    def not_published(self, changes: Iterable[Change]) -> None:
        """Publishing failed (perhaps half-way): the revision numbers are spent, since some may
        have reached the topic, and what they said stays pending for the next revision. A
        revision number names one content forever."""
        for ch in changes:
            ch.signal.revision = max(ch.signal.revision, ch.revision)
            self.dirty.add(ch.signal.signal_id)

    def take_changes(
        self, now: float = 0.0, update_every_s: float = 0.0
    ) -> list[tuple[Signal, str, list[str]]]:
        """`due_changes`, taken as published at once (for callers that publish nothing)."""
        changes = self.due_changes(now, update_every_s)
        self.published(changes, now)
        return [(ch.signal, ch.state, ch.added) for ch in changes]

    def take_dirty(self) -> list[Signal]:
        """The signals whose state changed since the last call (to be written)."""
        out = [self.signals[sid] for sid in self.dirty if sid in self.signals]
        self.dirty.clear()
        return out

    def payload(
        self, sig: Signal, state: str, added: list[str], revision: int | None = None
    ) -> SignalPayload:
        if len(self._parts) > PARTS_MEMORY:
            self._parts.clear()  # rebuilt on demand: a bound, not a policy
        return signal_payload(sig, state, added, revision, self._parts)

    # --- persistence ------------------------------------------------------------------------

    def learner_state(self) -> dict[str, Any]:
        return {"templates": self.template_names, "learner": self.learner.snapshot(), "clock": self.clock}

    def restore(
        self,
        learner_state: dict[str, Any] | None,
        signals: Iterable[dict[str, Any]],
        reserved: dict[str, int] | None = None,
    ) -> None:
        """Take back a checkpoint. `reserved`: the highest revision number reserved per signal;
        revisions published after the checkpoint lie at or below it, so numbering continues
        after it (never reusing a number that may name other content)."""
        if learner_state:
            self.template_names = list(learner_state["templates"])
            self.templates = {name: i for i, name in enumerate(self.template_names)}
            self.learner.restore(learner_state["learner"])
            self.clock = float(learner_state.get("clock", 0.0))
        # A signal opened and published after the checkpoint is opened again by the replay,
        # under the same id: its numbering, too, continues after what was reserved for it.
        self.revision_floor.update(reserved or {})
        for state in signals:
            sig = Signal.from_state(state)
            if sig.signal_id in self.revision_floor:
                sig.revision = max(sig.revision, self.revision_floor[sig.signal_id])
            self.signals[sig.signal_id] = sig
            for m in sig.members.values():
                self._index(sig, m, None)
                for start in m.active:
                    self.by_occurrence[(m.fingerprint, start)] = sig.signal_id
            self.clock = max(self.clock, sig.last_activity)
            for gk in sig.group_keys:
                self.by_group_key[gk] = sig.signal_id
            # A record replayed after a crash may already be in the checkpoint: recognise the
            # signals' latest alerts (and those not yet published).
            for alert_id in (*sig.recent_ids, *sig.added):
                self._remember(alert_id, sig.signal_id)


def alert_kinds(sig: Signal) -> set[str | int]:
    """The kinds of alert a signal holds: the source's rule name where the alert carries one
    (the same rule on two devices is one kind, whatever its text says), else its template."""
    return {m.rule if m.rule else m.template for m in sig.members.values()}


PARTS_MEMORY = 100_000  # built parts a tenant's clusterer keeps for its next revisions
_T = TypeVar("_T")


def _remembered(parts: dict[Any, Any], key: Any, build: Callable[[], _T]) -> _T:
    """`parts[key]`, built by `build` the first time it is asked for."""
    found = parts.get(key)
    if found is None:
        found = parts[key] = build()
    return found


def signal_payload(
    sig: Signal,
    state: str,
    added: list[str],
    revision: int | None = None,
    parts: dict[Any, Any] | None = None,
) -> SignalPayload:
    """The published form of one signal revision (also what the API shows of a signal).

    A revision repeats most of the last one's (its recent alerts, reasons and ids); with
    `parts`, each of those is built once and reused while it stays the same (keyed by all the
    values it is built from)."""
    if parts is None:
        parts = {}
    reasons = sorted(sig.reasons.values(), key=lambda r: -r[2])
    members = sig.members.values()
    kinds = alert_kinds(sig)
    title = sig.title
    if len(kinds) > 1:
        title = f"{sig.title} (+{len(kinds) - 1} related alert types)"
    if len(sig.devices) > 1:
        title += f" across {len(sig.devices)} devices"

    # Built from values the clusterer itself keeps valid, so constructed without a second
    # validation (the hot path at thousands of revisions a second); a unit test checks that
    # what is built this way validates to the same payload.
    def to_uuid(text: str) -> uuid.UUID:
        return _remembered(parts, text, lambda: uuid.UUID(text))

    def reason(r: list[Any]) -> GroupingReason:
        return _remembered(
            parts,
            ("reason", r[0], r[1], r[2]),
            lambda: GroupingReason.model_construct(feature=r[0], detail=r[1][:1000], weight=min(1.0, r[2])),
        )

    def described(r: list[Any]) -> SignalAlert:
        return _remembered(
            parts,
            ("alert", *r),
            lambda: SignalAlert.model_construct(
                alert_id=to_uuid(r[0]),
                title=r[1],
                device=r[2],
                severity=r[3],
                status="firing",
                rule=r[4],
                url=r[5],
                occurred_at=_ts(r[6]),
            ),
        )

    return SignalPayload.model_construct(
        signal_id=to_uuid(sig.signal_id),
        state=cast(SignalState, state),
        title=title[:1000],
        member_alert_ids=[to_uuid(x) for x in (sig.recent_ids or added[:1])],
        added_alert_ids=[to_uuid(x) for x in added],
        revision=sig.revision if revision is None else revision,
        devices=sorted(sig.devices),
        sites=list(sig.sites),
        open_alerts=sum(1 for m in members if m.active),
        severity=cast(Severity, sig.severity),
        first_seen=_ts(sig.first_seen),
        last_seen=_ts(sig.last_seen),
        count=sig.count,
        confidence=min(1.0, max(0.0, sig.confidence)),
        reasons=[reason(r) for r in reasons[:6]],
        flapping=sig.flapping,
        merged_into=to_uuid(sig.merged_into) if sig.merged_into else None,
        alerts=[described(r) for r in sig.recent_alerts],
    )


MAX_TEMPLATE_DISTANCE = 0.45  # cosine distance: "Disk C: almost full" vs "Low disk space" ~0.37


def cluster_templates(vectors: np.ndarray, times: list[float], window_s: float) -> np.ndarray:
    """HDBSCAN over template embeddings (cosine distance, brute force in float64), with seeds
    further apart in time than the window kept apart. Returns a label per seed, -1 for none."""

    v = vectors.astype(np.float64)
    dist = np.clip(1.0 - v @ v.T, 0.0, 2.0)
    t = np.asarray(times, dtype=np.float64)
    dist[np.abs(t[:, None] - t[None, :]) > window_s] = 2.0
    np.fill_diagonal(dist, 0.0)
    return cluster_distances(dist)


def cluster_distances(dist: np.ndarray) -> np.ndarray:
    """HDBSCAN on a precomputed distance matrix, keeping only tight clusters."""
    from sklearn.cluster import HDBSCAN

    def fit(single: bool) -> np.ndarray:
        def run(epsilon: float) -> np.ndarray:
            return np.asarray(
                HDBSCAN(
                    min_cluster_size=2,
                    min_samples=1,
                    metric="precomputed",
                    cluster_selection_epsilon=epsilon,
                    allow_single_cluster=single,  # a micro-batch is often one burst and a few strays
                    copy=True,
                ).fit_predict(dist)
            )

        try:
            return run(0.4)
        except TypeError:
            # scikit-learn 1.9's epsilon search fails on some trees with a single cluster
            # allowed ("only 0-dimensional arrays can be converted"); without the epsilon
            # the fit is sound, only a little stricter.
            return run(0.0)

    def tight(labels: np.ndarray) -> tuple[np.ndarray, bool]:
        # HDBSCAN finds density, not similarity: a cluster must also be tight to count.
        out, all_tight = labels.copy(), True
        for label in set(labels.tolist()) - {-1}:
            idx = np.where(labels == label)[0]
            if dist[np.ix_(idx, idx)].max() > MAX_TEMPLATE_DISTANCE:
                out[idx] = -1
                all_tight = False
        return out, all_tight

    labels, ok = tight(fit(True))
    if not ok:
        labels, _ = tight(fit(False))
    return labels
