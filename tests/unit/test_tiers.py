"""The unit tier refuses I/O (see this folder's conftest): each kind of attempt fails here."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys

import pytest

from libs.common.embeddings import Embedder
from libs.common.redaction import PersonNames
from tests.unit.conftest import IOInUnitTest


def test_a_unit_test_cannot_start_a_process_connect_open_a_database_or_load_a_model() -> None:
    with pytest.raises(IOInUnitTest, match="start a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    with pytest.raises(IOInUnitTest, match="network"), socket.socket() as s:
        s.connect(("127.0.0.1", 9))
    with pytest.raises(IOInUnitTest, match="database"):
        sqlite3.connect(":memory:")
    with pytest.raises(IOInUnitTest, match="sentence model"):
        Embedder().encode(["disk full"])
    with pytest.raises(IOInUnitTest, match="language model"):
        PersonNames().find("Ask Maria Lopez to call back")
