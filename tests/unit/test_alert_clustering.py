"""Alert clustering logic without I/O: templates, learned correlation, the clusterer, and the
alarm-stream scoring used by `msp eval alarms`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from evals.alarms_data import Alarm, linked_types, pair_scores, quiet_gap_baseline, related_types
from libs.common.events import AlertReceived, SignalPayload
from services.triage.alerts.clusterer import ClusterConfig, Signal, TenantClusterer, signal_payload
from services.triage.alerts.correlation import CorrelationLearner
from services.triage.alerts.templates import mask, template_of
from tests.samples import timed_alert

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def alert(fp: str, title: str, at: float, **kw: Any) -> AlertReceived:
    return timed_alert("acme", fp, title, at=at, t0=T0, **kw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Disk D: above 91% on FS01", "Disk D: above <NUM>% on <ID>"),
        ("Host fs01.corp.local unreachable from 10.0.0.4", "Host <HOST> unreachable from <IP>"),
        ("Backup job 3f2a1b2c-1111-2222-3333-444455556666 failed", "Backup job <GUID> failed"),
        ("Patch failed with code 0x80070005 on WS-22", "Patch failed with code <HEX> on <ID>"),
        ("Path /var/lib/postgresql/data is full", "Path <PATH> is full"),
        ("Account bob@example.com locked out", "Account <EMAIL> locked out"),
        ("Service Spooler stopped", "Service Spooler stopped"),
    ],
)
def test_masking_keeps_the_words_and_hides_what_varies(text: str, expected: str) -> None:
    assert mask(text) == expected


def test_a_rule_name_leads_the_template() -> None:
    a = alert("x", "Pod api-7f9 restarted 5 times", 0, labels={"alertname": "KubePodCrashLooping"}).payload
    b = alert("y", "Pod web-1c2 restarted 9 times", 0, labels={"alertname": "KubePodCrashLooping"}).payload
    assert template_of(a) == template_of(b) == "KubePodCrashLooping: Pod <ID> restarted <NUM> times"


def test_learned_correlation_links_what_fires_together_and_not_what_is_independent() -> None:
    rng = np.random.default_rng(1)
    learner = CorrelationLearner(window_s=60, min_lift=1.0, min_support=5)
    t = 0.0
    for _ in range(400):
        t += 600  # episodes ten minutes apart, on one of 20 devices
        device = f"d:{rng.integers(20)}"
        learner.observe(0, (device,), t)  # template 0 is always followed by 1 ...
        learner.observe(1, (device,), t + 5)
        other = f"d:{rng.integers(20)}"
        learner.observe(2, (other,), t + 300)  # ... while 2 fires on its own schedule
    assert learner.linked(0, 1) and learner.lift(0, 1) > 2
    assert not learner.linked(0, 2)
    restored = CorrelationLearner(window_s=60, min_lift=1.0, min_support=5)
    restored.restore(learner.snapshot())
    assert restored.lift(0, 1) == learner.lift(0, 1)


def test_a_link_needs_support_before_it_counts() -> None:
    learner = CorrelationLearner(window_s=60, min_lift=1.0, min_support=5)
    for i in range(3):
        learner.observe(0, ("d:a",), i * 1000.0)
        learner.observe(1, ("d:a",), i * 1000.0 + 1)
    assert not learner.linked(0, 1)


def test_unlinked_alert_types_on_one_device_stay_apart_and_linked_ones_join() -> None:
    c = TenantClusterer("acme", ClusterConfig(min_support=3))
    t = 0.0
    for _ in range(10):  # history: "link down" and "BGP down" come together on routers
        t += 5000
        for i, dev in enumerate(("R1", "R2", "R3")):
            c.add(alert(f"link-{dev}", f"Link down on {dev}", t + i, device=dev, started=t + i))
            c.add(alert(f"bgp-{dev}", f"BGP session down on {dev}", t + i + 2, device=dev, started=t + i + 2))
            c.add(
                alert(
                    f"link-{dev}",
                    f"Link down on {dev}",
                    t + i + 60,
                    device=dev,
                    status="resolved",
                    started=t + i,
                )
            )
            c.add(
                alert(
                    f"bgp-{dev}",
                    f"BGP session down on {dev}",
                    t + i + 60,
                    device=dev,
                    status="resolved",
                    started=t + i + 2,
                )
            )
        c.add(alert(f"ups-{t}", "UPS on battery", t + 2500, device="R9"))
    t += 20000
    link = c.add(alert("link-R1", "Link down on R1", t, device="R1"))
    bgp = c.add(alert("bgp-R1", "BGP session down on R1", t + 3, device="R1"))
    assert link is bgp is not None
    assert any(r[0] == "learned_correlation" for r in bgp.reasons.values())
    disk = c.add(alert("disk-R1", "Disk above 90% on R1", t + 4, device="R1"))
    assert disk is not None and disk is not link, "never seen with the others: its own signal"


def test_a_signal_resolves_after_its_alerts_resolve_and_stay_resolved() -> None:
    cfg = ClusterConfig(resolve_hold_s=300)
    c = TenantClusterer("acme", cfg)
    sig = c.add(alert("cpu-1", "CPU high on WEB1", 0, device="WEB1"))
    assert sig is not None
    c.add(alert("cpu-1", "CPU high on WEB1", 100, device="WEB1", status="resolved", started=0))
    c.sweep(T0.timestamp() + 200)
    assert sig.status == "open", "still within the hold-down"
    c.sweep(T0.timestamp() + 500)
    assert sig.status == "resolved"
    changes = {s.signal_id: state for s, state, _ in c.take_changes()}
    assert changes[sig.signal_id] == "resolved"


def test_a_redelivered_alert_changes_nothing() -> None:
    c = TenantClusterer("acme", ClusterConfig())
    ev = alert("cpu-1", "CPU high on WEB1", 0, device="WEB1")
    sig = c.add(ev)
    assert sig is not None and c.add(ev) is None
    assert sig.count == 1


def test_signal_state_survives_a_round_trip_through_its_stored_form() -> None:
    c = TenantClusterer("acme", ClusterConfig())
    sig = c.add(alert("cpu-1", "CPU high on WEB1", 0, device="WEB1", site="hq"))
    assert sig is not None
    copy = Signal.from_state(sig.to_state())
    assert copy.to_state() == sig.to_state()
    restored = TenantClusterer("acme", ClusterConfig())
    restored.restore(c.learner_state(), [sig.to_state()])
    assert restored.add(alert("cpu-1", "CPU high on WEB1", 30, device="WEB1")).signal_id == sig.signal_id  # type: ignore[union-attr]


def test_a_revision_built_without_validation_is_exactly_what_validation_gives() -> None:
    c = TenantClusterer("acme", ClusterConfig())
    for i in range(3):
        c.add(alert(f"ping-{i}", f"Ping loss to FS0{i}", i, device=f"FS0{i}", site="hq"))
    for sig, state, added in c.take_changes():
        built = c.payload(sig, state, added)
        assert SignalPayload.model_validate(built.model_dump()) == built
        assert SignalPayload.model_validate_json(built.model_dump_json()) == built


def test_revisions_built_from_remembered_parts_equal_revisions_built_afresh() -> None:
    c = TenantClusterer("acme", ClusterConfig(min_support=2))
    revisions = 0
    for i in range(40):  # repeats, new devices, resolutions: reasons and recent alerts change
        status = "resolved" if i % 7 == 6 else "firing"
        c.add(
            alert(f"disk-{i % 5}", "Disk almost full", i * 30, device=f"FS0{i % 3}", site="hq", status=status)
        )
        for sig, state, added in c.take_changes():
            assert c.payload(sig, state, added) == signal_payload(sig, state, added)
            revisions += 1
    assert revisions > 10 and c._parts  # parts were remembered and reused
    assert TenantClusterer("globex", ClusterConfig())._parts is not c._parts  # never another tenant's


def test_pair_scores_count_same_device_pairs_within_the_hour() -> None:
    linked = np.array([[True, True, False], [True, True, False], [False, False, True]])
    alarms = [
        Alarm(0, 0, 1, 0, 10),
        Alarm(1, 1, 1, 100, 110),  # linked with row 0
        Alarm(2, 2, 1, 200, 210),  # not linked with 0 or 1
        Alarm(3, 0, 2, 0, 10),  # another device: never a pair with the others
        Alarm(4, 0, 1, 5000, 5010),  # more than an hour later
    ]
    scores = pair_scores(alarms, ["a", "a", "a", "b", "c"], linked)
    # pairs: (0,1) linked shared, (0,2) unlinked shared, (1,2) unlinked shared
    assert scores["linked_recall"] == 1.0
    assert scores["pair_precision"] == round(1 / 3, 4)
    assert quiet_gap_baseline(alarms, 900) == [0, 0, 0, 1, 2]


def test_related_precision_counts_chains_and_common_causes_but_not_unrelated_types() -> None:
    # 0 -> 1 -> 2 (a chain), 0 -> 3 (3 and 1 share the cause 0), 4 alone
    dag = np.zeros((5, 5), dtype=int)
    dag[0, 1] = dag[1, 2] = dag[0, 3] = 1
    related = related_types(dag)
    assert related[0, 2] and related[2, 0], "a chain of two edges"
    assert related[1, 3] and related[2, 3], "a common cause, also through a chain"
    assert not related[4, 0] and not related[4, 2], "no path and no common cause"
    linked = linked_types(dag)
    assert not linked[0, 2] and not linked[1, 3]
    alarms = [Alarm(0, 0, 1, 0, 10), Alarm(1, 2, 1, 60, 70), Alarm(2, 4, 1, 120, 130)]
    scores = pair_scores(alarms, ["a", "a", "a"], linked, related)
    # pairs: (0,2) related, not linked; (0,4) and (2,4) neither
    assert scores["pair_precision"] == 0.0
    assert scores["related_pair_precision"] == round(1 / 3, 4)


def test_new_group_detection_survives_any_micro_batch_and_keeps_only_tight_groups() -> None:
    from services.triage.alerts.clusterer import MAX_TEMPLATE_DISTANCE, cluster_distances

    rng = np.random.default_rng(0)
    for _ in range(300):  # includes shapes on which scikit-learn's epsilon search raises
        n, k = int(rng.integers(3, 30)), int(rng.integers(1, 5))
        v = rng.normal(size=(k, 8))[rng.integers(0, k, n)]
        v = v + rng.normal(scale=rng.choice([0.0, 0.01, 0.3]), size=(n, 8))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        dist = np.clip(1 - v @ v.T, 0, 2)
        t = rng.integers(0, 3, n) * 1000.0
        dist[np.abs(t[:, None] - t[None, :]) > 600] = 2.0
        np.fill_diagonal(dist, 0)
        labels = cluster_distances(dist)
        assert labels.shape == (n,)
        for label in set(labels.tolist()) - {-1}:
            idx = np.where(labels == label)[0]
            assert len(idx) >= 2 and dist[np.ix_(idx, idx)].max() <= MAX_TEMPLATE_DISTANCE


def test_one_rule_on_two_devices_is_not_related_alert_types() -> None:
    # The same Alertmanager rule on two file servers of a site, with texts that differ in
    # more than what templates mask (the drive letter): one kind of alert, not two.
    c = TenantClusterer("acme", ClusterConfig())
    rule = {"alertname": "FilesystemAlmostFull"}
    c.add(
        alert(
            "fs1",
            "Filesystem D: on FS01 has less than 5% space left",
            0,
            device="FS01",
            site="hq",
            labels=rule,
        )
    )
    c.add(
        alert(
            "fs2",
            "Filesystem E: on FS02 has less than 4% space left",
            60,
            device="FS02",
            site="hq",
            labels=rule,
        )
    )
    # Their templates differ (D: vs E:), so it is the embedding step that puts them together
    # (a tight cluster on one site): the merge it performs.
    a, b = sorted(c.signals.values(), key=lambda s: s.first_seen)
    c._merge(a, b, "hq")
    sig = a
    assert sig.count == 2
    title = c.payload(sig, "updated", []).title
    assert "related alert types" not in title and "across 2 devices" in title
    # A different rule in the same signal is a related type.
    backup = c.add(
        alert(
            "bk1",
            "Backup to FS01 failed: target full",
            90,
            device="FS01",
            site="hq",
            labels={"alertname": "BackupFailed"},
        )
    )
    assert backup is not None
    if backup is not sig:
        c._merge(sig, backup, "hq")
    assert "(+1 related alert types)" in c.payload(sig, "updated", []).title


def test_a_revision_describes_its_alerts_with_their_own_text_and_link() -> None:
    c = TenantClusterer("acme", ClusterConfig())
    first = alert("fs1", "Filesystem D: on FS01 has less than 5% space left", 0, device="FS01", site="hq")
    second = alert("fs2", "Filesystem D: on FS02 has less than 4% space left", 60, device="FS02", site="hq")
    second = second.model_copy(
        update={"payload": second.payload.model_copy(update={"url": "http://prom.example/graph?g0.expr=x"})}
    )
    c.add(first)
    c.add(second)
    ((sig, state, added),) = c.take_changes()
    described = {str(a.alert_id): a for a in c.payload(sig, state, added).alerts}
    assert described[str(second.event_id)].title == "Filesystem D: on FS02 has less than 4% space left"
    assert described[str(second.event_id)].device == "FS02"
    assert described[str(second.event_id)].url == "http://prom.example/graph?g0.expr=x"
    assert described[str(first.event_id)].title.startswith("Filesystem D: on FS01")
    # What is kept survives a checkpoint and a restart.
    restored = TenantClusterer("acme", ClusterConfig())
    restored.restore(c.learner_state(), [sig.to_state()])
    again = restored.payload(restored.signals[sig.signal_id], "updated", [])
    assert {str(a.alert_id) for a in again.alerts} == set(described)
