"""Redaction of secrets and personal data before any text leaves the process (for the LLM).

Each distinct value becomes a stable placeholder (`[SECRET_1]`, `[EMAIL_2]`, ...) so the model
can still refer to it; `restore` puts the values back into its answer, inside the process.
Secrets are matched by shape (cloud keys, tokens, JWTs, card numbers that pass Luhn) and by
context (the value after "password", "pwd", "secret", "token", connection-string fields).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# (kind, pattern, group holding the value); patterns run in this order on the text left over.
_CONTEXT_WORDS = (
    r"(?:password|passwd|pwd|passcode|pass\s*phrase|pin|secret|api[_\s-]?key|token|client[_\s-]?secret)"
)
_PATTERNS: list[tuple[str, re.Pattern[str], int]] = [
    # URLs with credentials: scheme://user:password@host
    ("SECRET", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@", re.I), 1),
    # Connection-string fields: Password=...; AccountKey=...; SharedAccessKey=...
    (
        "SECRET",
        re.compile(r"\b(?:password|pwd|accountkey|sharedaccesskey|secret)\s*=\s*([^;\s\"']+)", re.I),
        1,
    ),
    # Bearer tokens
    ("SECRET", re.compile(r"\bBearer\s+([A-Za-z0-9._~+/=-]{16,})"), 1),
    # JSON Web Tokens
    ("SECRET", re.compile(r"\b(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"), 1),
    # Cloud and SaaS keys with a recognisable prefix
    ("SECRET", re.compile(r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b"), 1),
    ("SECRET", re.compile(r"\b((?:sk|rk|pk)-[A-Za-z0-9_-]{20,})\b"), 1),
    ("SECRET", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{30,})\b"), 1),
    ("SECRET", re.compile(r"\b(xox[abprs]-[A-Za-z0-9-]{10,})\b"), 1),
    ("SECRET", re.compile(r"\b(msp_[0-9a-f]{16}_[A-Za-z0-9_-]{20,})"), 1),
    # "password: X", "temp password is X", "pwd - X": after the shaped keys, so "token: Bearer
    # eyJ..." has already lost its token and the word "Bearer" is not taken for one.
    (
        "CONTEXT",
        re.compile(rf"\b{_CONTEXT_WORDS}\b(?:\s+(?:is|was|=|:|-)|\s*[:=])\s*[\"']?([^\s\"',;]{{4,}})", re.I),
        1,
    ),
    # "temp password Winter2026!Blue": a bare value after the word, when it looks like one
    # (a digit in it), so "password reset" or "password policy" stay.
    ("BARE", re.compile(rf"\b{_CONTEXT_WORDS}\s+([^\s\"',;]{{6,}})", re.I), 1),
    # Personal data
    ("EMAIL", re.compile(r"\b([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})\b"), 1),
    ("CARD", re.compile(r"\b((?:\d[ -]?){12,18}\d)\b"), 1),
    ("PHONE", re.compile(r"(?<![\w.])(\+?\d[\d ()-]{7,}\d)(?![\w.])"), 1),
]


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _phone(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    # Dates, times and ids look like numbers too; a phone number has 9-15 digits and no date shape.
    return 9 <= len(digits) <= 15 and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip())


def _context_value(value: str) -> bool:
    return value.lower() not in {"bearer", "basic", "reset", "change", "expired", "required"}


def _password_like(value: str) -> bool:
    return any(c.isdigit() for c in value) and _context_value(value)


_CHECKS: dict[str, Callable[[str], bool]] = {
    "CARD": _card,
    "PHONE": _phone,
    "CONTEXT": _context_value,
    "BARE": _password_like,
}
# Kinds that are matched separately but named as one in placeholders.
_NAMED = {"CONTEXT": "SECRET", "BARE": "SECRET"}


@dataclass
class Redacted:
    text: str
    mapping: dict[str, str] = field(default_factory=dict)  # placeholder -> original value

    def restore(self, answer: str) -> str:
        """Put the original values back where the answer uses their placeholders."""
        for placeholder, value in self.mapping.items():
            answer = answer.replace(placeholder, value)
        return answer


class Redactor:
    def __init__(self, kinds: set[str] | None = None) -> None:
        # Which kinds to redact; secrets always, personal data unless the judgement needs it.
        self.kinds = {"SECRET", "CARD", "EMAIL", "PHONE"} if kinds is None else kinds | {"SECRET"}

    def redact(self, text: str, into: Redacted | None = None) -> Redacted:
        """Redact `text`; pass an earlier result as `into` to share placeholders across texts."""
        result = into or Redacted("")
        by_value = {v: k for k, v in result.mapping.items()}
        counters: dict[str, int] = {}
        for placeholder in result.mapping:
            kind = placeholder[1:].rsplit("_", 1)[0]
            counters[kind] = counters.get(kind, 0) + 1

        for matcher, pattern, group in _PATTERNS:
            kind = _NAMED.get(matcher, matcher)
            if kind not in self.kinds:
                continue
            check = _CHECKS.get(matcher)

            def replace(
                m: re.Match[str],
                kind: str = kind,
                check: Callable[[str], bool] | None = check,
                group: int = group,
            ) -> str:
                value = m.group(group)
                if value.startswith("[") and value.endswith("]") or (check and not check(value)):
                    return m.group(0)
                placeholder = by_value.get(value)
                if placeholder is None:
                    counters[kind] = counters.get(kind, 0) + 1
                    placeholder = f"[{kind}_{counters[kind]}]"
                    by_value[value] = placeholder
                    result.mapping[placeholder] = value
                start, end = m.span(group)
                whole = m.group(0)
                offset = m.start(0)
                return whole[: start - offset] + placeholder + whole[end - offset :]

            text = pattern.sub(replace, text)
        result.text = text
        return result
