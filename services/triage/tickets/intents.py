"""What a ticket asks for (its intent), from a catalogue that ships with the platform and that
each tenant may extend.

An intent is matched two ways, and both count: its key phrases (whole words, case-insensitive)
and the sentence-embedding similarity of the ticket to the intent's example requests. The
confidence is calibrated on the catalogue itself: each example matched against all the others
(mostly right) and against the catalogue without its own intent (wrong by construction, like a
ticket the catalogue does not cover); a logistic fit on the best score and its margin gives
the probability of being right. Under one half, the ticket gets no intent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression

from services.triage.tickets.model import margin

# A ticket that resembles no intent this much is left without one (not every ticket asks for
# something the catalogue names).
MIN_SCORE = 0.35
KEYWORD_BONUS = 0.15


@dataclass(frozen=True)
class Intent:
    name: str
    description: str
    category: str  # the category a tenant with no history of its own gets for this intent
    keywords: tuple[str, ...]
    examples: tuple[str, ...]
    tenant_id: str | None = None  # None: part of the shipped catalogue


CATALOGUE: tuple[Intent, ...] = (
    Intent(
        "password_reset",
        "A user forgot or needs to change a password.",
        "Access",
        ("password reset", "reset password", "forgot password", "forgotten password", "password expired"),
        (
            "please reset my password",
            "user forgot her password and cannot log in",
            "password expired this morning, need a new one",
            "can you reset the password for john's account",
            "i need to change my windows password",
        ),
    ),
    Intent(
        "account_lockout",
        "An account is locked out after failed sign-ins.",
        "Access",
        ("locked out", "account locked", "lockout", "unlock account", "unlock my account"),
        (
            "my account is locked out",
            "user locked out after too many attempts",
            "please unlock the account of the receptionist",
            "cannot sign in, it says account locked",
            "ad account keeps locking out every hour",
        ),
    ),
    Intent(
        "mfa_problem",
        "Multi-factor authentication fails or needs re-registration.",
        "Access",
        ("mfa", "2fa", "two factor", "multi factor", "authenticator", "verification code"),
        (
            "not getting the mfa prompt on my new phone",
            "authenticator app lost after phone replacement",
            "two factor code is not accepted",
            "please reset my mfa registration",
            "verification code sms never arrives",
        ),
    ),
    Intent(
        "access_request",
        "Access to a system, folder, application or group is requested.",
        "Access",
        ("access to", "grant access", "permission", "permissions", "add me to", "access request"),
        (
            "please grant me access to the finance share",
            "need permissions on the project folder",
            "add the new analyst to the sales group",
            "request access to the crm application",
            "cannot open the hr folder, access denied",
        ),
    ),
    Intent(
        "admin_rights",
        "Local administrator rights are requested on a computer.",
        "Administrative rights",
        ("admin rights", "administrator rights", "local admin", "admin access", "elevated"),
        (
            "need local admin rights to install a driver",
            "please give me administrator rights on my laptop",
            "temporary admin access for the developer",
            "elevated permissions needed to run setup",
        ),
    ),
    Intent(
        "licence_request",
        "A software licence is requested, renewed or reassigned.",
        "Purchase",
        ("licence", "license", "licensing", "subscription", "seat"),
        (
            "new starter needs an office 365 licence",
            "please assign a visio license to me",
            "our adobe subscription expires next week",
            "request an additional seat for the design tool",
            "licence renewal for the accounting software",
        ),
    ),
    Intent(
        "mailbox_access",
        "Access to a mailbox, shared mailbox or calendar, or a mailbox problem.",
        "Access",
        ("shared mailbox", "mailbox", "calendar", "delegate", "distribution list", "send as"),
        (
            "please give me access to the support shared mailbox",
            "add full access to the info mailbox for anna",
            "need send as rights on the sales mailbox",
            "mailbox is full and cannot receive email",
            "share the meeting room calendar with the team",
        ),
    ),
    Intent(
        "onboarding",
        "A new employee starts: accounts, equipment and access to set up.",
        "HR Support",
        ("new starter", "new employee", "new hire", "onboarding", "joiner", "starts on"),
        (
            "new starter on monday needs an account and laptop",
            "please onboard the new hire in accounting",
            "set up email and access for a new employee",
            "joiner next week, usual access as the team",
        ),
    ),
    Intent(
        "offboarding",
        "An employee leaves: accounts to disable, data and equipment to recover.",
        "HR Support",
        ("leaver", "leaving", "offboarding", "last day", "disable account", "terminated"),
        (
            "employee leaving on friday, disable the account",
            "offboard the leaver and forward his mail to the manager",
            "last day of contractor today, remove all access",
            "terminated user, please block sign in immediately",
        ),
    ),
    Intent(
        "printer",
        "A printer does not print, scan or connect.",
        "Hardware",
        ("printer", "printing", "print", "scanner", "toner", "paper jam"),
        (
            "printer on the second floor is not printing",
            "cannot add the network printer to my laptop",
            "paper jam on the main office printer",
            "scanner does not send to email",
            "toner low warning on the printer",
        ),
    ),
    Intent(
        "vpn",
        "The VPN or remote access does not connect.",
        "Network",
        ("vpn", "remote access", "anyconnect", "globalprotect", "forticlient"),
        (
            "vpn does not connect from home",
            "remote access keeps disconnecting",
            "cannot reach internal sites over the vpn",
            "vpn client says authentication failed",
        ),
    ),
    Intent(
        "backup_failure",
        "A backup job failed or is missing.",
        "Storage",
        ("backup", "backups", "veeam", "snapshot", "restore"),
        (
            "nightly backup job failed on the file server",
            "veeam reports backup errors for two vms",
            "no successful backup for three days",
            "need to restore a deleted file from yesterday's backup",
        ),
    ),
    Intent(
        "disk_space",
        "A disk, drive or storage quota is full or nearly full.",
        "Storage",
        (
            "disk space",
            "disk full",
            "disk is full",
            "drive is full",
            "low disk",
            "drive full",
            "out of space",
            "no space left",
            "quota",
            "storage full",
        ),
        (
            "c drive is almost full on the server",
            "cannot save files, it says the disk is full",
            "low disk space warning on my laptop",
            "onedrive storage quota exceeded",
            "file server volume out of space",
        ),
    ),
    Intent(
        "software_install",
        "Software is to be installed, updated or removed.",
        "Software",
        ("install", "installation", "uninstall", "update", "upgrade", "software"),
        (
            "please install microsoft project on my laptop",
            "need the latest version of the pdf editor",
            "can you install python for the data team",
            "uninstall the old antivirus from reception pc",
        ),
    ),
    Intent(
        "hardware_failure",
        "A device is broken, damaged or does not start.",
        "Hardware",
        ("broken", "not turning on", "does not start", "damaged", "cracked", "replacement", "faulty"),
        (
            "laptop does not turn on anymore",
            "monitor is flickering and then goes black",
            "keyboard broken, several keys do not work",
            "docking station faulty, need a replacement",
            "screen cracked after a fall",
        ),
    ),
    Intent(
        "network_outage",
        "A site, link or service is down for several users.",
        "Network",
        ("outage", "internet down", "network down", "no internet", "wifi", "offline"),
        (
            "internet is down for the whole office",
            "wifi not working in the meeting rooms",
            "network outage at the warehouse site",
            "all users offline since this morning",
        ),
    ),
)


@dataclass(frozen=True)
class IntentMatch:
    intent: Intent | None  # None: nothing in the catalogue fits well enough
    confidence: float
    score: float
    matched_terms: tuple[str, ...]
    example: str | None  # the catalogue example the ticket resembles most


@dataclass
class IntentMatcher:
    """Matches tickets to a set of intents (the shipped catalogue plus a tenant's own)."""

    intents: Sequence[Intent]
    embed: Callable[[list[str]], np.ndarray]
    _patterns: list[re.Pattern[str]] = field(init=False)
    _vectors: np.ndarray = field(init=False)
    _owner: np.ndarray = field(init=False)  # example row -> intent index
    _examples: list[str] = field(init=False)
    _calibration: LogisticRegression | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.intents:
            raise ValueError("an intent matcher needs at least one intent")
        self._patterns = [_phrases(i.keywords) for i in self.intents]
        self._examples = [e for i in self.intents for e in i.examples]
        self._owner = np.array([n for n, i in enumerate(self.intents) for _ in i.examples])
        self._vectors = self.embed(self._examples)
        self._calibrate()

    def _scores(self, sims: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Per intent: the best example similarity, plus a bonus when a key phrase occurs."""
        out = np.full((len(texts), len(self.intents)), -1.0)
        for n in range(len(self.intents)):
            cols = self._owner == n
            if cols.any():
                out[:, n] = sims[:, cols].max(axis=1)
        for row, text in enumerate(texts):
            for n, pattern in enumerate(self._patterns):
                if pattern.search(text):
                    out[row, n] += KEYWORD_BONUS
        return out

    def _calibrate(self) -> None:
        # Two views of every example: against all other examples (is the best intent the
        # right one?), and with its own intent left out (the best match is then wrong by
        # construction: what a ticket the catalogue does not cover looks like). A logistic fit
        # on the best score and its margin over the runner-up turns those into P(right).
        sims = self._vectors @ self._vectors.T
        np.fill_diagonal(sims, -1.0)
        seen = self._scores(sims, self._examples)
        right = seen.argmax(axis=1) == self._owner
        unseen = sims.copy()
        unseen[self._owner[:, None] == self._owner[None, :]] = -1.0
        uncovered = self._scores(unseen, self._examples)
        uncovered[np.arange(len(self._owner)), self._owner] = -1.0  # its own phrases do not count either
        features = np.vstack([_features(seen), _features(uncovered)])
        truth = np.concatenate([right, np.zeros(len(right), dtype=bool)])
        if truth.all() or not truth.any():
            return
        self._calibration = LogisticRegression().fit(features, truth)

    def match(self, texts: Sequence[str], vectors: np.ndarray) -> list[IntentMatch]:
        sims = vectors @ self._vectors.T
        scores = self._scores(sims, texts)
        if self._calibration is not None:
            conf = self._calibration.predict_proba(_features(scores))[:, 1]
        else:
            conf = np.clip(scores.max(axis=1), 0.0, 1.0)
        out = []
        for row, text in enumerate(texts):
            best = int(scores[row].argmax())
            if scores[row, best] < MIN_SCORE or conf[row] < 0.5:
                out.append(IntentMatch(None, float(1.0 - conf[row]), float(scores[row, best]), (), None))
                continue
            cols = np.flatnonzero(self._owner == best)
            example = self._examples[int(cols[sims[row, cols].argmax()])]
            terms = tuple(m.group(0).lower() for m in self._patterns[best].finditer(text))
            out.append(
                IntentMatch(
                    self.intents[best],
                    float(conf[row]),
                    float(scores[row, best]),
                    tuple(dict.fromkeys(terms)),
                    example,
                )
            )
        return out


def _features(scores: np.ndarray) -> np.ndarray:
    return np.column_stack([scores.max(axis=1), margin(scores)])


def _phrases(keywords: Sequence[str]) -> re.Pattern[str]:
    if not keywords:
        return re.compile(r"(?!x)x")  # matches nothing
    alternatives = sorted(
        (re.escape(k.strip().lower()) for k in keywords if k.strip()), key=len, reverse=True
    )
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)
