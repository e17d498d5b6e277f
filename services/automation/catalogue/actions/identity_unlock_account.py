from services.automation.catalogue.base import Action, Params


class UnlockAccount(Params):
    user: str


ACTION = Action(
    name="identity.unlock_account",
    system="identity",
    description="Clears a lockout caused by too many failed sign-in attempts without changing the password.",
    params=UnlockAccount,
    risk="low",
    scope="identity.account.unlock",
    reversible=False,
    cues=(r"\bunlock(?:ed|ing)?\b", r"\b(?:clear|remove|reset) (?:the |his |her |their )?lock-?out\b"),
    examples=("unlock his account",),
    repeatable=("user",),
    target="user",
)
