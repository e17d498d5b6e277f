from services.automation.catalogue.base import Action, Params


class ResetPassword(Params):
    user: str
    must_change_at_next_logon: bool = True


ACTION = Action(
    name="identity.reset_password",
    system="identity",
    description="Sets a new temporary password on the user's directory account, by default forcing them "
    "to choose their own at the next sign-in.",
    params=ResetPassword,
    risk="medium",
    scope="identity.password.write",
    reversible=False,
    cues=(
        r"\b(?:reset|change|set|new|temp|temporary|issue)\b[^.;]{0,25}\b(?:pw|pwd|password|passwd|passcode)\b",
        r"\b(?:pw|pwd|password|passwd)\s*(?:reset|change)\b",
    ),
    examples=("reset her password", "pw reset"),
    repeatable=("user",),
    target="user",
)
