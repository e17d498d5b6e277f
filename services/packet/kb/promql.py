"""What a Prometheus rule's expression says about its subject, as words to search runbooks by.

An alert from Prometheus carries its rule's expression in its `generatorURL` (the graph page's
`g0.expr`). The expression's grammar (functions, aggregations, keywords, label names, numbers
and durations) is the same in every rule and says nothing of what is wrong; its metric names
and label values (`alertmanager_config_last_reload_successful`, `job="alertmanager-main"`) do.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

# Aggregation operators and keywords: grammar, whatever the rule is about.
GRAMMAR = frozenset(
    "sum min max avg count stddev stdvar topk bottomk quantile count_values group limitk "
    "limit_ratio by without on ignoring group_left group_right bool offset and or unless atan2".split()
)
# Words whose parenthesised list holds label names.
_LABEL_LISTS = frozenset("by without on ignoring group_left group_right".split())
_TOKEN = re.compile(
    r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`"  # strings
    r"|#[^\n]*"  # a comment (a # in a string is the string's)
    r"|\d+(?:\.\d+)?(?:ms|[smhdwy])*"  # numbers and durations (5m, 1h30m)
    r"|[A-Za-z_:][A-Za-z0-9_:]*|\S"
)
_WORDY = re.compile(r"[A-Za-z0-9]")
_NAME = re.compile(r"[A-Za-z_:]")


def expression_terms(expr: str) -> str:
    """The metric names and label values of a PromQL expression, each once, in the order they
    first appear, space separated (a rule that compares a metric with itself or repeats its
    selector watches them once): functions (a name followed by `(`), aggregations and
    keywords, label names (inside `{}` and in `by (...)` lists), numbers, durations and
    comments are left out."""
    tokens = [t for t in _TOKEN.findall(expr) if not t.startswith("#")]
    out: list[str] = []
    braces = 0
    lists: list[bool] = []  # per open parenthesis: does it hold label names?
    for i, tok in enumerate(tokens):
        if tok == "{":
            braces += 1
        elif tok == "}":
            braces = max(0, braces - 1)
        elif tok == "(":
            lists.append(i > 0 and tokens[i - 1].lower() in _LABEL_LISTS)
        elif tok == ")":
            if lists:
                lists.pop()
        elif tok[0] in "\"'`":
            if _WORDY.search(tok):
                out.append(tok[1:-1])  # a label value (or a function's text argument)
        elif _NAME.match(tok):
            label_name = braces > 0 or (bool(lists) and lists[-1])
            function = i + 1 < len(tokens) and tokens[i + 1] == "("
            if not (label_name or function or tok.lower() in GRAMMAR):
                out.append(tok)
    return " ".join(dict.fromkeys(out))


def expression_of(url: str | None) -> str | None:
    """The rule expression in a Prometheus graph link (`generatorURL`: `...graph?g0.expr=...`),
    or None when the link is not one."""
    if not url:
        return None
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return None
    exprs = query.get("g0.expr")
    return exprs[0] if exprs and exprs[0].strip() else None
