"""Alert text to template: the variable parts (numbers, ids, host names, addresses, paths) are
masked, so that "Disk D: above 91% on FS01" and "Disk D: above 97% on FS07" are one template.

A source's own rule identity (Alertmanager's `alertname`, an RMM's monitor or check name) is a
better template than any text: when an alert carries one, it leads the template.
"""

from __future__ import annotations

import re
from functools import lru_cache

from libs.common.events import AlertPayload

# Order matters: the most specific patterns first, so an IP is not masked as numbers.
_MASKS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<GUID>"),
    (re.compile(r"\b(?:https?|s?ftp|smb)://\S+", re.I), "<URL>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<EMAIL>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<IP>"),
    (re.compile(r"\b(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}\b", re.I), "<MAC>"),
    (re.compile(r"\b(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{1,4}\b", re.I), "<IP>"),
    (re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.$~-]+){2,}[\\/]?"), "<PATH>"),
    (re.compile(r"\b(?:[a-z0-9-]+\.)+(?:local|lan|corp|internal|com|net|org|io|cloud)\b", re.I), "<HOST>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<HEX>"),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<HEX>"),
    # Tokens mixing letters and digits are names of things: hosts (FS01), ids (INC0042), ports.
    (re.compile(r"\b(?=[A-Za-z_-]*\d)(?=\d*[A-Za-z_])[A-Za-z0-9_-]+\b"), "<ID>"),
    (re.compile(r"[-+]?\b\d+(?:[.,]\d+)?\b"), "<NUM>"),
]
_SPACES = re.compile(r"\s+")
RULE_LABELS = ("alertname", "check", "monitor", "rule", "alert_type")


# All masks in one alternation, so a title is scanned once rather than once per pattern; the
# first alternative that matches at a position wins, in the order above.
_ONE_PASS = re.compile("|".join(f"(?P<m{i}>{p.pattern})" for i, (p, _) in enumerate(_MASKS)), re.I)
_TOKENS = {f"m{i}": token for i, (_, token) in enumerate(_MASKS)}


@lru_cache(maxsize=100_000)
def mask(text: str) -> str:
    """Cached: alert texts repeat far more than they vary."""
    masked = _ONE_PASS.sub(lambda m: _TOKENS[m.lastgroup or ""], text)
    return _SPACES.sub(" ", masked).strip()


def rule_of(alert: AlertPayload) -> str | None:
    """The source's own rule name of an alert (Alertmanager's `alertname`, an RMM's check or
    monitor), when it carries one."""
    return next((alert.labels[k] for k in RULE_LABELS if alert.labels.get(k)), None)


def template_of(alert: AlertPayload) -> str:
    """The template key of an alert: its rule name when the source gives one, then its masked
    title."""
    rule = rule_of(alert)
    title = mask(alert.title)
    return f"{rule}: {title}" if rule else title
