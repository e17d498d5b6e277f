"""The test broker's storage is dropped only when no broker runs on it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from cli import broker

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stored(cfg: broker.BrokerConfig) -> Path:
    topic = cfg.home / "data" / "test.alertreceived-abc-0"
    topic.mkdir(parents=True)
    (topic / "00000000000000000000.log").write_bytes(b"x")
    return topic


def test_storage_of_a_stopped_broker_is_dropped(tmp_path: Path) -> None:
    cfg = broker.BrokerConfig(port=_free_port(), var_dir=tmp_path)
    assert broker.reset_storage(cfg) is False  # nothing stored yet
    _stored(cfg)
    (cfg.home / "broker.log").write_text("kept")
    assert broker.reset_storage(cfg) is True
    assert not (cfg.home / "data").exists()
    assert (cfg.home / "broker.log").read_text() == "kept"  # only the topics go


def test_storage_is_never_dropped_under_a_running_broker(tmp_path: Path) -> None:
    cfg = broker.BrokerConfig(port=_free_port(), var_dir=tmp_path)
    topic = _stored(cfg)
    cfg.pid_file.write_text(str(os.getpid()))  # a live process holds the pid file
    with pytest.raises(broker.BrokerError, match="runs at"):
        broker.reset_storage(cfg)
    assert topic.exists()
    cfg.pid_file.unlink()
    with socket.socket() as listening:  # or anything answers on its port
        listening.bind(("127.0.0.1", cfg.port))
        listening.listen()
        with pytest.raises(broker.BrokerError, match="runs at"):
            broker.reset_storage(cfg)
    assert topic.exists()
