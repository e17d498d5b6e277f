from dataclasses import replace

from services.audit.chain import GENESIS, ChainEntry, entry_hash, verify


def chain(n: int) -> list[ChainEntry]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        body = f'{{"n": {seq}}}'
        h = entry_hash(prev, seq, body)
        out.append(ChainEntry(seq, body, prev, h))
        prev = h
    return out


def test_intact_chain_verifies() -> None:
    c = chain(5)
    assert verify(c, c[-1].hash, 5).ok


def test_an_altered_entry_is_detected() -> None:
    c = chain(5)
    c[2] = replace(c[2], body='{"n": 33}')
    result = verify(c, c[-1].hash, 5)
    assert not result.ok and result.first_bad_seq == 3 and result.reason == "entry was altered"


def test_a_deleted_entry_is_detected() -> None:
    c = chain(5)
    del c[1]
    result = verify(c, c[-1].hash, 5)
    assert not result.ok and result.first_bad_seq == 3


def test_a_removed_tail_is_detected_against_the_head() -> None:
    c = chain(5)
    result = verify(c[:3], c[-1].hash, 5)
    assert not result.ok and "removed" in (result.reason or "")


def test_a_rewritten_chain_with_fresh_hashes_is_detected_by_the_head() -> None:
    c = chain(3)
    forged, prev = [], GENESIS
    for e in c:
        body = e.body.replace("2", "9")
        h = entry_hash(prev, e.tenant_seq, body)
        forged.append(ChainEntry(e.tenant_seq, body, prev, h))
        prev = h
    assert not verify(forged, c[-1].hash, 3).ok
