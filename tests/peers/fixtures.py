"""pytest fixtures for the connector peers (see tests/peers/__init__.py). Session-wide peers
are stateless or isolate by name; a DC is started per test that changes directory state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import (
    DomainController,
    Moto,
    Prism,
    graph_spec,
    start_dc,
    start_moto,
    start_prism,
    twilio_specs,
)
from tests.peers.ninjaone import Device, NinjaOnePeer


@pytest.fixture(scope="session")
def peers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("peers")


@pytest.fixture
def dc(peers_dir: Path) -> Iterator[DomainController]:
    """A fresh Samba AD DC of this test's own (under a second: a copy of a provisioned one)."""
    started = start_dc(peers_dir)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def moto(peers_dir: Path) -> Iterator[Moto]:
    started = start_moto(peers_dir)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def twilio_peers(peers_dir: Path) -> Iterator[tuple[Prism, Prism]]:
    api, verify = twilio_specs()
    messages = start_prism(api, peers_dir)
    checks = start_prism(verify, peers_dir)
    yield messages, checks
    messages.stop()
    checks.stop()


@pytest.fixture(scope="session")
def graph(peers_dir: Path) -> Iterator[Prism]:
    started = start_prism(graph_spec(), peers_dir)
    yield started
    started.stop()


@pytest.fixture
def ninjaone() -> Iterator[NinjaOnePeer]:
    peer = NinjaOnePeer(
        devices=[Device(101, "ACME-LT-042"), Device(102, "PRN-SRV01"), Device(103, "SQL01")],
        scripts={"flush_dns": 11, "gpupdate": 12, "clear_temp_files": 13},
    )
    peer.start()
    yield peer
    peer.stop()
