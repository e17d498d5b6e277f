"""The hash chain that makes the trail tamper-evident (pure logic, no I/O).

Each tenant's entries form a chain: an entry's hash covers the previous entry's hash and the
entry's exact stored body. Editing, deleting or reordering any entry breaks every hash after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = "0" * 64


def entry_hash(prev_hash: str, tenant_seq: int, body: str) -> str:
    h = hashlib.sha256()
    h.update(prev_hash.encode())
    h.update(b"\n")
    h.update(str(tenant_seq).encode())
    h.update(b"\n")
    h.update(body.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ChainEntry:
    tenant_seq: int
    body: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None


def verify(entries: Iterable[ChainEntry], head_hash: str | None, head_seq: int | None) -> Verification:
    """Check a tenant's entries in `tenant_seq` order against each other and the chain head."""
    prev, expected_seq, n = GENESIS, 1, 0
    for e in entries:
        n += 1
        if e.tenant_seq != expected_seq:
            return Verification(False, n, e.tenant_seq, f"sequence gap: expected {expected_seq}")
        if e.prev_hash != prev:
            return Verification(False, n, e.tenant_seq, "previous hash does not match")
        if entry_hash(prev, e.tenant_seq, e.body) != e.hash:
            return Verification(False, n, e.tenant_seq, "entry was altered")
        prev, expected_seq = e.hash, expected_seq + 1
    if head_hash is not None and (head_hash != prev or head_seq != expected_seq - 1):
        return Verification(False, n, expected_seq, "entries after the last one were removed")
    return Verification(True, n)
