from services.automation.catalogue.base import Action, Params


class RequireMfaReregistration(Params):
    user: str


ACTION = Action(
    name="identity.require_mfa_reregistration",
    system="identity",
    description="Removes the user's registered MFA methods so they must enrol them again at the next "
    "sign-in, for example after a lost or replaced phone.",
    params=RequireMfaReregistration,
    risk="medium",
    scope="identity.mfa.reset",
    reversible=False,
    cues=(
        r"\bmfa\s+re-?(?:reg|regist|enrol)",
        r"\bre-?(?:register|registration|enrol|enroll)\w*\b[^.;]{0,15}\b(?:mfa|authenticator|2fa|methods?)\b",
        r"\b(?:reset|remove|clear|revoke)\b[^.;]{0,15}\b(?:mfa|2fa|authenticator)"
        r"(?: methods?| registration)?\b",
    ),
    examples=("force MFA re-registration", "make her re-register MFA"),
    repeatable=("user",),
    target="user",
)
