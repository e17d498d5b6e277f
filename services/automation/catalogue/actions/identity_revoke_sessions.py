from services.automation.catalogue.base import Action, Params


class RevokeSessions(Params):
    user: str


ACTION = Action(
    name="identity.revoke_sessions",
    system="identity",
    description="Invalidates the user's refresh tokens and active sign-in sessions so every device must "
    "authenticate again.",
    params=RevokeSessions,
    risk="medium",
    scope="identity.sessions.revoke",
    reversible=False,
    cues=(
        r"\b(?:revoke|kill|end|terminate|invalidate|clear|reset)\b[^.;]{0,25}\b(?:sessions?|tokens?|sign-?ins?)\b",
        r"\bsign (?:him|her|them|the user) out\b",
        r"\b(?:sign|log) out (?:of )?(?:all|every)",
    ),
    examples=("revoke her sessions", "sign him out everywhere"),
    repeatable=("user",),
    target="user",
)
