"""The unit tier does no I/O: a test here that starts a process, opens a network connection
or a database, or loads a model fails at once, naming what it tried (such a test belongs in
`tests/integration`)."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from typing import Any

import pytest


class IOInUnitTest(AssertionError):
    pass


def _refuse(what: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise IOInUnitTest(f"a unit test may not {what}: move it to tests/integration")

    return refuse


@pytest.fixture(autouse=True)
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    from libs.common import embeddings, redaction

    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a process"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("open a network connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("open a network connection"))
    monkeypatch.setattr(sqlite3, "connect", _refuse("open a database"))
    monkeypatch.setattr(embeddings.Embedder, "_load", _refuse("load the sentence model"))
    monkeypatch.setattr(redaction.PersonNames, "_pipeline", _refuse("load the language model"))
