"""`msp eval redaction`: how many people's names the redactor takes out of a text before it is
sent to a model, and how often it takes out something that is not a name.

- **Names caught** (`--cases`, JSON lines of `{instruction, ticket: {requester}, expected:
  [{params}]}`): the names to find are the ones the case itself proves are names, without
  anyone labelling them: a person's address or account written as `first.last` (in the ticket's
  requester, the expected plan's parameters or the text itself) whose parts the text also
  spells out as capitalised words ("add Dana to VPN-Users. Her login is
  dana.whitfield@..."). A mention counts as caught when no word of it survives redaction.
  Every other phrase taken out as a person is listed, for a reader to judge.
- **False alarms** (`--data`, a CSV of tickets that were anonymised before publication, so
  they hold no names): the share of tickets in which anything is taken out as a person, and
  the phrases taken out most often.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from libs.common.redaction import Redactor

# `first.last`, alone or as an address's local part (not a domain: nothing before it).
_ADDRESS = re.compile(r"(?<![\w.@-])([a-z][a-z'-]+)\.([a-z][a-z'-]+)(?![\w.-])", re.I)


def _people(case: dict[str, Any]) -> set[tuple[str, str]]:
    """(first, last) of every `first.last` identity the case names."""
    values: list[str] = [str(case.get("ticket", {}).get("requester") or ""), case["instruction"]]
    for step in case.get("expected") or []:
        values.extend(str(v) for v in (step.get("params") or {}).values())
    people = set()
    for value in values:
        for m in _ADDRESS.finditer(value):
            people.add((m.group(1).lower(), m.group(2).lower()))
    return people


def _mentions(text: str, people: set[tuple[str, str]]) -> list[str]:
    """The capitalised mentions of those people in `text`, full names before first names alone."""
    found: list[str] = []
    taken: list[tuple[int, int]] = []
    for first, last in sorted(people):
        for pattern in (rf"{first} {last}", first, last):
            for m in re.finditer(rf"(?<![\w.@]){pattern}(?![\w@]|\.\w)", text, re.I):
                word = m.group(0)
                if not word[0].isupper() or any(s < m.end() and m.start() < e for s, e in taken):
                    continue
                taken.append(m.span())
                found.append(word)
    return found


def _read_cases(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"no cases file at {path}")
    cases = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            cases.append(
                {
                    "instruction": str(row["instruction"]),
                    "ticket": dict(row.get("ticket") or {}),
                    "expected": list(row.get("expected") or []),
                }
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a case ({exc})") from None
    return cases


def _read_texts(path: Path, column: str) -> list[str]:
    if not path.is_file():
        raise ValueError(f"no ticket file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:  # type: ignore[operator]
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no column {column!r} (has {reader.fieldnames})")
        return [row[column] for row in reader]


def evaluate(*, cases: Path | None, data: Path | None, text_col: str, limit: int | None) -> dict[str, Any]:
    if cases is None and data is None:
        raise ValueError("eval redaction needs --cases FILE.jsonl and/or --data CSV")
    redactor = Redactor()
    redactor.redact("warm-up: Ada Lovelace")  # the model loads once, outside the timings
    report: dict[str, Any] = {}
    if cases is not None:
        rows = _read_cases(cases)
        total = caught = 0
        missed: list[str] = []
        other: Counter[str] = Counter()
        started = time.perf_counter()
        for case in rows:
            text = case["instruction"]
            red = redactor.redact(text)
            mentions = _mentions(text, _people(case))
            for mention in mentions:
                total += 1
                if any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", red.text) for w in mention.split()):
                    missed.append(mention)
                else:
                    caught += 1
            named = {w.lower() for m in mentions for w in m.split()}
            for placeholder, value in red.mapping.items():
                if placeholder.startswith("[PERSON_") and not set(value.lower().split()) <= named:
                    other[value] += 1
        report["names"] = {
            "cases": len(rows),
            "mentions": total,
            "caught": caught,
            "recall": round(caught / total, 3) if total else None,
            "missed": missed,
            "other_phrases_taken_as_names": dict(other.most_common()),
            "ms_per_text": round((time.perf_counter() - started) / max(1, len(rows)) * 1000, 2),
        }
    if data is not None:
        texts = _read_texts(data, text_col)
        if limit is not None and limit < len(texts):
            texts = random.Random(7).sample(texts, limit)
        flagged = 0
        phrases: Counter[str] = Counter()
        started = time.perf_counter()
        for n, text in enumerate(texts, 1):
            taken = [v for p, v in redactor.redact(text).mapping.items() if p.startswith("[PERSON_")]
            flagged += bool(taken)
            phrases.update(taken)
            if n % 1000 == 0:
                print(f"[eval] {n}/{len(texts)} tickets", file=sys.stderr)
        report["false_alarms"] = {
            "tickets": len(texts),
            "tickets_with_a_phrase_taken_as_a_name": flagged,
            "rate": round(flagged / len(texts), 4) if texts else None,
            "most_common": dict(phrases.most_common(15)),
            "ms_per_text": round((time.perf_counter() - started) / max(1, len(texts)) * 1000, 2),
        }
    return report
