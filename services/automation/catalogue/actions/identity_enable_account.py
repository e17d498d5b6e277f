from services.automation.catalogue.base import Action, Params


class EnableAccount(Params):
    user: str


ACTION = Action(
    name="identity.enable_account",
    system="identity",
    description="Allows a previously disabled directory account to sign in again.",
    params=EnableAccount,
    risk="medium",
    scope="identity.account.enable",
    reversible=True,
    cues=(r"\b(?:re-?enable|enable|unblock|reactivate|re-?activate)\b(?![^.;]*\b(?:console|iam|keys?)\b)",),
    examples=("re-enable the account",),
    repeatable=("user",),
    target="user",
)
